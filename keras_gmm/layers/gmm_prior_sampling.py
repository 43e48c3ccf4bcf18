"""GMMPriorSampling: a VAE latent with a learnable Gaussian-mixture prior."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.layers.gaussian_mixture_em import GaussianMixtureEM, NotFittedError
from keras_gmm.ops import covariance as covariance_lib
from keras_gmm.ops import kl as kl_ops

__all__ = ["GMMPriorSampling", "COVARIANCE_TYPES", "KL_METHODS", "INFERENCE_MODES",
           "SAMPLE_LOG_VAR_LIMIT"]

KL_METHODS = ("vade", "mc")
INFERENCE_MODES = ("sample", "mean")
#: The reparameterized sample (and the Monte Carlo KL taken at it) uses
#: ``z_log_var`` clipped to ``[-50, 50]``: standard deviations from 1.4e-11 to
#: 7.2e10, beyond which a float32 sample means nothing (``exp(z_log_var / 2)``
#: overflows at 177). The clip passes gradients through unchanged.
SAMPLE_LOG_VAR_LIMIT = 50.0
#: The prior's covariance types: per-component diagonal (log-variances) or
#: full (a Cholesky factor per component).
COVARIANCE_TYPES = kl_ops.PRIOR_COVARIANCE_TYPES
# softplus^-1(1): the raw diagonal of a unit covariance Cholesky factor ("full").
_UNIT_RAW_SCALE = float(np.log(np.expm1(1.0)))
# Spread (standard deviation) of the initial component means around 0: about
# that of an encoder whose KL pulls its codes toward unit scale.
_INITIAL_MEAN_SPREAD = 1.0


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMPriorSampling(keras.layers.Layer):
    """Reparameterized VAE sampling under a learnable Gaussian-mixture prior.

    The layer takes the encoder's ``[z_mean, z_log_var]`` (``q(z | x) =
    N(z_mean, diag(exp(z_log_var)))``), returns ``z = z_mean + exp(z_log_var /
    2) * eps`` with ``eps ~ N(0, I)``, and adds the prior term of the ELBO
    with ``add_loss``, against the prior

        ``p(z, c) = pi_c N(z; mu_c, Sigma_c)``, ``pi = softmax(logits)``,

    whose ``logits [K]``, ``means [K, D]`` and covariances are ordinary
    trainable weights (unconstrained; ``model.fit`` trains them with the
    encoder and decoder): with ``covariance_type="diag"`` (default)
    ``Sigma_c = diag(exp(v_c))``, ``log_variances [K, D]``; with "full" a
    full covariance per component through ``raw_scales [K, D(D+1)/2]``, the
    rule of :class:`keras_gmm.MixtureDensityHead`'s "full" heads (the
    covariance Cholesky factor's diagonal ``softplus(raw)``, the strictly
    lower entries of its inverse raw), for clusters whose latent features
    are correlated. This is VaDE (Jiang et al., 2017): the mixture
    components are the clusters, and the model both clusters and generates.

    The prior term (``kl_weight`` times its batch mean, in nats per example):

    - ``kl_method="vade"`` (default): VaDE's closed-form ``KL(q(z, c | x) ||
      p(z, c))`` with ``q(c | x) = gamma``, the cluster probabilities
      ``gamma_c ∝ pi_c exp(E_q(z|x)[log N(z; mu_c, v_c)])`` computed in log
      space (the ``q(c | x)`` that maximises the ELBO for the given
      ``q(z | x)``; VaDE's ``p(c | z)`` taken in expectation over ``q(z |
      x)``). Deterministic given the encoder's outputs.
    - ``kl_method="mc"``: the one-sample Monte Carlo estimate ``log q(z | x) -
      log p(z)`` at the returned sample (``p(z)`` the mixture marginal), an
      unbiased estimate of ``KL(q(z | x) || p(z))`` (never larger in
      expectation than the VaDE term; noisier).

    The math is :mod:`keras_gmm.ops.kl` on :mod:`keras_gmm.ops.gaussian` (the
    posterior stays diagonal; the trace term of a full prior is ``sum_d
    exp(s_d) Lambda_cdd``, no inverse or determinant formed), in
    float32 (also under ``mixed_float16``). Every row of ``gamma`` and of the
    KL is finite for finite inputs, however large ``z_log_var`` (the terms
    shared by all components cancel in log space, and an overflowing
    ``exp`` is continued linearly beyond a variance ratio of ``e^50``, see
    :mod:`keras_gmm.ops.kl`); the sample clips ``z_log_var`` to
    ``[-SAMPLE_LOG_VAR_LIMIT, SAMPLE_LOG_VAR_LIMIT]`` (50). A NaN row gives
    NaN for that row. For the ELBO, compile the model
    with the reconstruction negative log-likelihood per example **summed**
    over features (nats), e.g. ``64 * BinaryCrossentropy()`` for 64 pixels;
    with a per-feature mean instead, scale ``kl_weight`` by ``1 / features``.

    Args:
        num_components: number of mixture components (clusters) ``K`` >= 1.
        event_size: dimension ``D`` of the latent ``z`` (>= 1); the last axis
            of ``z_mean`` and ``z_log_var``. (``latent_dim=`` is its
            deprecated name: still accepted, with a DeprecationWarning.)
        kl_weight: number >= 0 multiplying the prior term (1.0: the ELBO; 0
            adds a zero loss, e.g. for an autoencoder pre-training).
        kl_method: "vade" (closed form, default) or "mc" (Monte Carlo).
        covariance_type: the prior components' covariances, "diag" (default)
            or "full".
        seed: optional int in ``[0, 2**63 - 1]`` seeding the initial component
            means and the sampling stream.
        inference: what the layer returns when not training: "sample"
            (default: a reparameterized sample, as in training) or "mean"
            (``z_mean``: deterministic reconstructions and embeddings).
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: ``[z_mean, z_log_var]``, two tensors of the same shape
            ``[..., event_size]``.
        training: Python bool; when False (inference) the output follows
            ``inference``. The prior term is added in both cases (it is what
            ``evaluate`` reports).
        return_cluster_probabilities: Python bool (default False); when True
            the layer returns ``(z, gamma)``, as ``MultiHeadAttention`` does
            with ``return_attention_scores``.

    Input shape:
        Two tensors ``(..., event_size)``.

    Output shape:
        ``z``: ``(..., event_size)``; with ``return_cluster_probabilities``
        also ``gamma``: ``(..., num_components)``. Always float32.

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> x_in = keras.Input((8,))
    >>> h = keras.layers.Dense(16, activation="relu")(x_in)
    >>> z_mean, z_log_var = keras.layers.Dense(2)(h), keras.layers.Dense(2)(h)
    >>> prior = keras_gmm.GMMPriorSampling(num_components=3, event_size=2, seed=0)
    >>> z = prior([z_mean, z_log_var])
    >>> vae = keras.Model(x_in, keras.layers.Dense(8)(z))
    >>> vae.compile("adam", loss="mse")
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> _ = vae.fit(x, x, epochs=1, verbose=0)
    >>> encoder = keras.Model(x_in, [z_mean, z_log_var])
    >>> prior.cluster_probabilities(*encoder(x[:4])).shape
    TensorShape([4, 3])
    >>> prior.sample_prior(5, component=1, seed=0).shape
    TensorShape([5, 2])

    A full covariance per component, from a full EM on the encoder means:

    >>> em = keras_gmm.GaussianMixtureEM(3, covariance_type="full", seed=0)
    >>> _ = em.fit(encoder(x)[0], verbose=0)
    >>> full = keras_gmm.GMMPriorSampling(3, 2, covariance_type="full")
    >>> full.initialize_from(em).raw_scales.shape  # D(D+1)/2 = 3 per component
    TensorShape([3, 3])

    Reference:
        Jiang, Zheng, Tan, Tang and Zhou, "Variational Deep Embedding: An
        Unsupervised and Generative Approach to Clustering", IJCAI 2017.
        Gurumurthy, Sarvadevabhatla and Babu, "DeLiGAN: Generative
        Adversarial Networks for Diverse and Limited Data", CVPR 2017 (a
        learnable mixture latent for a generator; see :meth:`sample_prior`).
    """

    def __init__(
        self,
        num_components,
        event_size=None,
        kl_weight=1.0,
        kl_method="vade",
        seed=None,
        inference="sample",
        covariance_type="diag",
        **kwargs,
    ):
        event_size = _event_size_argument(event_size, kwargs.pop("latent_dim", None))
        # The prior's weights are read in float32 (no autocast to float16
        # under mixed precision): the KL and responsibilities need it.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_components = _validation.check_positive_int(
            num_components, "num_components"
        )
        self.event_size = _validation.check_positive_int(event_size, "event_size")
        self.kl_weight = _validation.check_number(kl_weight, "kl_weight", low=0.0)
        self.kl_method = _validation.check_one_of(
            kl_method, "kl_method", KL_METHODS,
            hint="the closed-form VaDE KL or its Monte Carlo estimate",
        )
        self.inference = _validation.check_one_of(
            inference, "inference", INFERENCE_MODES,
            hint="what the layer returns when not training",
        )
        self.covariance_type = covariance_lib.check(
            covariance_type, supported=COVARIANCE_TYPES
        )
        self.seed = _validation.check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    @property
    def latent_dim(self):
        """Deprecated name of :attr:`event_size`."""
        warnings.warn(
            "GMMPriorSampling.latent_dim is deprecated; use event_size.",
            DeprecationWarning, stacklevel=2,
        )
        return self.event_size

    # ------------------------------------------------------------------ build
    def _check_input_shapes(self, input_shape):
        shapes = _two_inputs(input_shape, "input_shape")
        mean_shape, log_var_shape = (tuple(s) for s in shapes)
        if len(mean_shape) != len(log_var_shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(mean_shape, log_var_shape)
        ):
            raise ValueError(
                "z_mean and z_log_var must have the same shape; received "
                f"z_mean shape {mean_shape} and z_log_var shape {log_var_shape}."
            )
        if not mean_shape or mean_shape[-1] != self.event_size:
            raise ValueError(
                f"The last axis of z_mean and z_log_var must be event_size="
                f"{self.event_size}; received shape {mean_shape}. Make the "
                "encoder output event_size values, or set event_size to match."
            )
        return mean_shape

    def build(self, input_shape):
        self._check_input_shapes(input_shape)
        self._build_weights()

    def _build_weights(self):
        k, d = self.num_components, self.event_size
        self.logits = self.add_weight(
            name="logits", shape=(k,), initializer="zeros", dtype="float32", autocast=False
        )
        self.means = self.add_weight(
            name="means",
            shape=(k, d),
            initializer=keras.initializers.RandomNormal(
                stddev=_INITIAL_MEAN_SPREAD, seed=self.seed
            ),
            dtype="float32", autocast=False,
        )
        if self.covariance_type == "diag":
            self.log_variances = self.add_weight(
                name="log_variances", shape=(k, d), initializer="zeros",
                dtype="float32", autocast=False,
            )
        else:
            unit = self._covariance.initial_raw_scales(1, d, _UNIT_RAW_SCALE)
            self.raw_scales = self.add_weight(
                name="raw_scales", shape=(k, unit.size),
                initializer=keras.initializers.Constant(np.tile(unit, (k, 1))),
                dtype="float32", autocast=False,
            )
        self.built = True

    @property
    def _covariance(self):
        return covariance_lib.get(self.covariance_type)

    def _scale_variables(self):
        return (self.log_variances,) if self.covariance_type == "diag" else (
            self.raw_scales,)

    def _precisions_cholesky(self):
        """The prior's precision Cholesky factors (scikit-learn's layout):
        ``exp(-v / 2)`` ``[K, D]`` ("diag"), ``[K, D, D]`` ("full")."""
        if self.covariance_type == "diag":
            return kl_ops.precisions_cholesky_of_log_variances(
                tf.convert_to_tensor(self.log_variances))
        return self._covariance.precisions_cholesky_from_raw(
            tf.reshape(tf.convert_to_tensor(self.raw_scales), [-1]),
            self.num_components, self.event_size, 0.0,
        )

    def _prior(self):
        """``(logits, means, precisions_cholesky, covariance_type)``: the
        prior arguments of :mod:`keras_gmm.ops.kl`."""
        return (
            tf.convert_to_tensor(self.logits),
            tf.convert_to_tensor(self.means),
            self._precisions_cholesky(),
            self.covariance_type,
        )

    def mixture(self):
        """The prior as a :class:`keras_gmm.mixture.MixtureParams` (precision
        factors ``exp(-v / 2)`` for "diag"), read from the weights."""
        self._require_built()
        return mixture_lib.MixtureParams(*self._prior())

    def _require_built(self):
        if not self.built:
            raise ValueError(
                "The prior of this GMMPriorSampling layer is not built yet: "
                "call the layer on [z_mean, z_log_var] (or initialize_from) "
                "first."
            )

    def _posterior(self, z_mean, z_log_var):
        """The two inputs as float32 tensors, with checked shapes."""
        z_mean = tf.cast(tf.convert_to_tensor(z_mean), tf.float32)
        z_log_var = tf.cast(tf.convert_to_tensor(z_log_var), tf.float32)
        self._check_input_shapes([z_mean.shape, z_log_var.shape])
        if not self.built:
            self._build_weights()
        return z_mean, z_log_var

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None, return_cluster_probabilities=False):
        z_mean, z_log_var = self._posterior(*_two_inputs(inputs, "inputs"))
        prior = self._prior()
        eps = keras.random.normal(
            tf.shape(z_mean), dtype="float32", seed=self.seed_generator
        )
        sample_log_var = _sampling_log_var(z_log_var)
        z = z_mean + tf.exp(0.5 * sample_log_var) * eps
        if self.kl_method == "vade" or return_cluster_probabilities:
            vade, log_gamma = kl_ops.vade_kl(z_mean, z_log_var, *prior)
        kl = (
            vade
            if self.kl_method == "vade"
            else kl_ops.mc_kl(z, z_mean, sample_log_var, *prior)
        )
        self.add_loss(self.kl_weight * tf.reduce_mean(kl))
        if not training and self.inference == "mean":
            z = z_mean
        if return_cluster_probabilities:
            return z, tf.exp(log_gamma)
        return z

    def compute_output_shape(self, input_shape, return_cluster_probabilities=False):
        shape = self._check_input_shapes(input_shape)
        if return_cluster_probabilities:
            return shape, shape[:-1] + (self.num_components,)
        return shape

    def compute_output_spec(self, inputs, training=None,
                            return_cluster_probabilities=False):
        z_mean, z_log_var = _two_inputs(inputs, "inputs")
        shapes = self.compute_output_shape(
            [z_mean.shape, z_log_var.shape], return_cluster_probabilities
        )
        if return_cluster_probabilities:
            return tuple(keras.KerasTensor(s, dtype="float32") for s in shapes)
        return keras.KerasTensor(shapes, dtype="float32")

    # ------------------------------------------------------- the clusters
    def kl_divergence(self, z_mean, z_log_var, z=None):
        """The prior term per example (before ``kl_weight``): ``[...]``.

        For ``kl_method="vade"`` the closed form; for "mc" the estimate at
        ``z`` (a sample from ``q(z | x)``, required, of the shape of
        ``z_mean``), with ``z_log_var`` clipped as the layer's sample is
        (:data:`SAMPLE_LOG_VAR_LIMIT`).
        """
        z_mean, z_log_var = self._posterior(z_mean, z_log_var)
        prior = self._prior()
        if self.kl_method == "vade":
            return kl_ops.vade_kl(z_mean, z_log_var, *prior)[0]
        if z is None:
            raise ValueError(
                "kl_method='mc' estimates the KL at a sample: pass z, a draw "
                "from q(z | x)."
            )
        z = tf.cast(tf.convert_to_tensor(z), tf.float32)
        if not z.shape.is_compatible_with(z_mean.shape):
            raise ValueError(
                "`z` must have the shape of z_mean (one sample per row); "
                f"received z with shape {tuple(z.shape)} and z_mean with shape "
                f"{tuple(z_mean.shape)}."
            )
        return kl_ops.mc_kl(z, z_mean, _sampling_log_var(z_log_var), *prior)

    def cluster_probabilities(self, z_mean, z_log_var):
        """``gamma = q(c | x)``: ``[..., num_components]``, float32.

        ``gamma_c ∝ pi_c exp(E_q(z|x)[log N(z; mu_c, Sigma_c)])``, computed by
        a log-softmax, so every row of finite inputs is finite and sums to 1
        (however large ``z_log_var``); a row with NaN gives NaN. Passing
        ``z_log_var`` very negative (``-inf`` excluded) gives ``p(c |
        z_mean)``.
        """
        z_mean, z_log_var = self._posterior(z_mean, z_log_var)
        return tf.exp(kl_ops.log_responsibilities(z_mean, z_log_var, *self._prior()))

    def predict_cluster(self, z_mean, z_log_var):
        """The most probable cluster ``argmax_c gamma_c``: int32 ``[...]``;
        -1 for a row whose inputs hold NaN or inf (no cluster is invented)."""
        gamma = self.cluster_probabilities(z_mean, z_log_var)
        labels = tf.argmax(gamma, axis=-1, output_type=tf.int32)
        finite = tf.reduce_all(tf.math.is_finite(gamma), axis=-1)
        return tf.where(finite, labels, tf.constant(-1, tf.int32))

    @property
    def mixture_weights(self):
        """``pi = softmax(logits)``: ``[num_components]`` (a tensor)."""
        return tf.nn.softmax(tf.convert_to_tensor(self.logits))

    @property
    def stddevs(self):
        """Component (marginal) standard deviations: ``[K, D]`` (``exp(v /
        2)`` for "diag")."""
        self._require_built()
        return self._covariance.stddevs(self._precisions_cholesky(), self.event_size)

    # ------------------------------------------------------------ sampling
    def sample_prior(self, n, component=None, temperature=1.0, seed=None,
                     return_components=False):
        """Draw ``n`` latent codes from the prior: ``[n, event_size]``, float32.

        Each code is ``mu_c + temperature * L_c eps`` (``L_c`` the covariance
        Cholesky factor; ``exp(v_c / 2) * eps`` for "diag") for a
        component ``c`` and standard-normal ``eps``: reparameterized per
        component, so gradients reach the means and log-variances (a learnable
        mixture latent, e.g. the input of a GAN generator as in DeLiGAN). The
        component draw itself is discrete: no gradient reaches the logits.
        Drawn by :func:`keras_gmm.mixture.sample` (the one sampler) from
        :meth:`mixture`.

        Args:
            n: number of codes, an int >= 1 (or an int scalar tensor, checked
                in-graph).
            component: None (draw each code's component from ``softmax(
                logits)``), an int in ``[0, num_components)`` (every code from
                that component), or an int tensor ``[n]`` (one per code).
            temperature: finite number >= 0 (or scalar tensor) multiplying
                the standard deviations; 0 returns the component means.
            seed: None (the layer's seed generator advances), an int in
                ``[0, 2**63 - 1]``, or a shape ``[2]`` integer tensor
                (stateless, reproducible).
            return_components: also return the components, int32 ``[n]``.

        Returns:
            ``z [n, event_size]`` (and ``components [n]``).
        """
        self._require_built()
        if tf.is_tensor(n):
            if not n.dtype.is_integer:
                raise ValueError(
                    f"`n` must be an integer tensor; received dtype {n.dtype.name}."
                )
            n = tf.cast(n, tf.int32)
            check = tf.debugging.assert_positive(
                n, message="`n` must be an integer >= 1"
            )
            with tf.control_dependencies([check]):
                n = tf.identity(n)
        else:
            n = _validation.check_positive_int(n, "n", hint="the number of codes")
        temperature = mixture_lib.check_temperature(temperature, "temperature")
        seed = mixture_lib.stateless_seed(seed, self.seed_generator)
        components = None if component is None else self._checked_components(
            component, n
        )
        return mixture_lib.sample(
            self.mixture(), seed, temperature=1.0, sigma_temperature=temperature,
            n=n, components=components, return_components=return_components,
        )

    def _checked_components(self, component, n):
        """``component`` as int32 indices ``[n]`` (checked against ``[0, K)``:
        eagerly for Python ints, in-graph for tensors)."""
        k = self.num_components
        if isinstance(component, (int, np.integer)) and not isinstance(component, bool):
            component = _validation.check_int(
                component, "component", minimum=0, maximum=k - 1,
                hint=f"a component index, num_components={k}",
            )
            return tf.fill(tf.reshape(n, [1]), tf.constant(component, tf.int32))
        if isinstance(component, (bool, np.bool_, float, str)):
            raise ValueError(
                "`component` must be None, an int in [0, num_components) or an "
                f"integer tensor [n]; received component={component!r}."
            )
        component = tf.convert_to_tensor(component)
        if not component.dtype.is_integer:
            raise ValueError(
                "`component` must be None, an int or an integer tensor; "
                f"received dtype {component.dtype.name}."
            )
        rank = component.shape.rank
        if rank is not None and rank > 1:
            raise ValueError(
                "`component` must be a scalar or a vector [n] (one index per "
                f"code); received shape {tuple(component.shape)}."
            )
        if (
            rank == 1 and isinstance(n, int)
            and component.shape[0] is not None and component.shape[0] != n
        ):
            raise ValueError(
                f"`component` must hold one index per code (n={n}); received "
                f"{component.shape[0]} indices."
            )
        component = tf.cast(component, tf.int32)
        checks = [
            tf.debugging.assert_non_negative(
                component, message="`component` must be >= 0"
            ),
            tf.debugging.assert_less(
                component, k, message=f"`component` must be < num_components={k}"
            ),
        ]
        if rank != 0:
            checks.append(tf.debugging.assert_equal(
                tf.size(component), tf.cast(n, tf.int32),
                message="`component` must hold one index per code (n)",
            ))
        with tf.control_dependencies(checks):
            if rank == 0:
                return tf.fill(tf.reshape(n, [1]), component)
            return tf.identity(tf.reshape(component, [-1]))

    def permute_components(self, order):
        """Renumber the prior's components: new component ``k`` is old
        component ``order[k]`` (its logit, mean and covariance). A
        relabelling: the prior, the KL and every ``gamma`` row (permuted)
        are unchanged.

        Args:
            order: a permutation of ``range(num_components)`` (a sequence or
                array of ints).

        Returns:
            This layer.
        """
        self._require_built()
        order = _validation.check_permutation(order, self.num_components)
        for variable in (self.logits, self.means, *self._scale_variables()):
            variable.assign(tf.gather(tf.convert_to_tensor(variable), order))
        return self

    # -------------------------------------------------------- initialisation
    def initialize_from(self, em):
        """Set the prior from a fitted :class:`keras_gmm.GaussianMixtureEM`.

        The standard VaDE initialisation: fit a mixture by EM on the
        encoder means of the training data (after pre-training the
        autoencoder), then copy its weights (``logits = log weights``), means
        and covariances (``log_variances = log covariances`` for "diag", the
        raw scales of its precision factors for "full") into the prior.

        Args:
            em: a fitted ``GaussianMixtureEM`` with this layer's
                ``covariance_type`` and ``num_components``, on
                ``event_size``-dimensional data.

        Returns:
            This layer.

        Raises:
            NotFittedError: ``em`` is not fitted.
            ValueError: wrong type, covariance type or dimensions.
        """
        if not isinstance(em, GaussianMixtureEM):
            raise ValueError(
                "`em` must be a fitted keras_gmm.GaussianMixtureEM; received "
                f"em={em!r} of type {type(em).__name__}."
            )
        try:
            covariance_lib.check(
                em.covariance_type, supported=(self.covariance_type,)
            )
        except ValueError as error:
            raise ValueError(
                "initialize_from needs a GaussianMixtureEM with "
                f"covariance_type={self.covariance_type!r}, this prior's "
                f"(GMMPriorSampling(covariance_type=...)): {error}"
            ) from None
        try:
            weights, means = em.weights_, em.means_
            variances, factors = em.covariances_, em.precisions_cholesky_
        except NotFittedError as error:
            raise NotFittedError(
                f"initialize_from received an unfitted GaussianMixtureEM "
                f"({em.name!r}): call em.fit(encoder_means) first. ({error})"
            ) from None
        if em.num_components != self.num_components:
            raise ValueError(
                f"`em` has num_components={em.num_components} but this layer "
                f"has num_components={self.num_components}; fit the EM with "
                "the same number of components."
            )
        if means.shape[-1] != self.event_size:
            raise ValueError(
                f"`em` was fitted on {means.shape[-1]}-dimensional data but "
                f"this layer has event_size={self.event_size}; fit it on the "
                "encoder's z_mean."
            )
        if not self.built:
            self._build_weights()
        self.logits.assign(np.log(np.maximum(weights, 1e-30)).astype(np.float32))
        self.means.assign(np.asarray(means, np.float32))
        if self.covariance_type == "diag":
            self.log_variances.assign(np.log(variances).astype(np.float32))
        else:
            self.raw_scales.assign(self._covariance.raw_scales_from_precisions_cholesky(
                factors, 0.0).astype(np.float32))
        return self

    # --------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_components": self.num_components,
                "event_size": self.event_size,
                "kl_weight": self.kl_weight,
                "kl_method": self.kl_method,
                "seed": self.seed,
                "inference": self.inference,
                "covariance_type": self.covariance_type,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "latent_dim" in config and "event_size" not in config:
            # Saved before the rename (e.g. a zoo model): the file is not the
            # user's code, so no deprecation warning.
            config["event_size"] = config.pop("latent_dim")
        return super().from_config(config)


def _event_size_argument(event_size, latent_dim):
    """``event_size``, or the deprecated ``latent_dim=`` (with a warning)."""
    if latent_dim is None:
        if event_size is None:
            raise ValueError(
                "GMMPriorSampling needs `event_size`, the dimension D of the "
                "latent (the last axis of z_mean and z_log_var); received "
                "event_size=None."
            )
        return event_size
    if event_size is not None:
        raise ValueError(
            "Pass `event_size` only (`latent_dim` is its deprecated name); "
            f"received event_size={event_size!r} and latent_dim={latent_dim!r}."
        )
    warnings.warn(
        "GMMPriorSampling(latent_dim=...) is deprecated; use event_size=...",
        DeprecationWarning, stacklevel=3,
    )
    return latent_dim


def _sampling_log_var(z_log_var):
    """``z_log_var`` clipped to ``[-SAMPLE_LOG_VAR_LIMIT,
    SAMPLE_LOG_VAR_LIMIT]`` in value, with the identity's gradient (a NaN
    stays NaN)."""
    clipped = tf.clip_by_value(z_log_var, -SAMPLE_LOG_VAR_LIMIT, SAMPLE_LOG_VAR_LIMIT)
    return tf.stop_gradient(clipped) + (z_log_var - tf.stop_gradient(z_log_var))


def _is_shape(value):
    return isinstance(value, (list, tuple, tf.TensorShape)) or hasattr(value, "shape")


def _two_inputs(inputs, name):
    if (
        not isinstance(inputs, (list, tuple))
        or len(inputs) != 2
        or not all(_is_shape(x) or tf.is_tensor(x) for x in inputs)
    ):
        raise ValueError(
            f"GMMPriorSampling takes `{name}` = [z_mean, z_log_var] (two "
            f"tensors of shape [..., event_size]); received {inputs!r}."
        )
    return inputs
