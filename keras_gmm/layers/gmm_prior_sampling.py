"""GMMPriorSampling: a VAE latent with a learnable Gaussian-mixture prior."""

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import mixture as mixture_lib
from keras_gmm.layers.gaussian_mixture_em import GaussianMixtureEM, NotFittedError
from keras_gmm.ops import kl as kl_ops

__all__ = ["GMMPriorSampling", "KL_METHODS", "INFERENCE_MODES"]

KL_METHODS = ("vade", "mc")
INFERENCE_MODES = ("sample", "mean")
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

        ``p(z, c) = pi_c N(z; mu_c, diag(exp(v_c)))``, ``pi = softmax(logits)``,

    whose ``logits [K]``, ``means [K, D]`` and ``log_variances [K, D]`` are
    ordinary trainable weights (unconstrained; ``model.fit`` trains them with
    the encoder and decoder). This is VaDE (Jiang et al., 2017): the mixture
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

    The math is :mod:`keras_gmm.ops.kl` on :mod:`keras_gmm.ops.gaussian`, in
    float32 (also under ``mixed_float16``). For the ELBO, compile the model
    with the reconstruction negative log-likelihood per example **summed**
    over features (nats), e.g. ``64 * BinaryCrossentropy()`` for 64 pixels;
    with a per-feature mean instead, scale ``kl_weight`` by ``1 / features``.

    Args:
        num_components: number of mixture components (clusters) ``K`` >= 1.
        latent_dim: dimension ``D`` of the latent ``z`` (>= 1); the last axis
            of ``z_mean`` and ``z_log_var``.
        kl_weight: number >= 0 multiplying the prior term (1.0: the ELBO; 0
            adds a zero loss, e.g. for an autoencoder pre-training).
        kl_method: "vade" (closed form, default) or "mc" (Monte Carlo).
        seed: optional int seeding the initial component means and the
            sampling stream.
        inference: what the layer returns when not training: "sample"
            (default: a reparameterized sample, as in training) or "mean"
            (``z_mean``: deterministic reconstructions and embeddings).
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: ``[z_mean, z_log_var]``, two tensors of the same shape
            ``[..., latent_dim]``.
        training: Python bool; when False (inference) the output follows
            ``inference``. The prior term is added in both cases (it is what
            ``evaluate`` reports).
        return_cluster_probabilities: Python bool (default False); when True
            the layer returns ``(z, gamma)``, as ``MultiHeadAttention`` does
            with ``return_attention_scores``.

    Input shape:
        Two tensors ``(..., latent_dim)``.

    Output shape:
        ``z``: ``(..., latent_dim)``; with ``return_cluster_probabilities``
        also ``gamma``: ``(..., num_components)``. Always float32.

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> x_in = keras.Input((8,))
    >>> h = keras.layers.Dense(16, activation="relu")(x_in)
    >>> z_mean, z_log_var = keras.layers.Dense(2)(h), keras.layers.Dense(2)(h)
    >>> prior = keras_gmm.GMMPriorSampling(num_components=3, latent_dim=2, seed=0)
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
        latent_dim,
        kl_weight=1.0,
        kl_method="vade",
        seed=None,
        inference="sample",
        **kwargs,
    ):
        # The prior's weights are read in float32 (no autocast to float16
        # under mixed precision): the KL and responsibilities need it.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_components = _check_count(num_components, "num_components")
        self.latent_dim = _check_count(latent_dim, "latent_dim")
        if (
            isinstance(kl_weight, bool)
            or not isinstance(kl_weight, (int, float, np.integer, np.floating))
            or not np.isfinite(kl_weight)
            or kl_weight < 0
        ):
            raise ValueError(
                "`kl_weight` must be a finite number >= 0; received "
                f"kl_weight={kl_weight!r}."
            )
        self.kl_weight = float(kl_weight)
        if kl_method not in KL_METHODS:
            raise ValueError(
                f"`kl_method` must be one of {KL_METHODS} (closed-form VaDE KL "
                f"or Monte Carlo); received kl_method={kl_method!r}."
            )
        self.kl_method = kl_method
        if inference not in INFERENCE_MODES:
            raise ValueError(
                f"`inference` must be one of {INFERENCE_MODES}; received "
                f"inference={inference!r}."
            )
        self.inference = inference
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
        ):
            raise ValueError(f"`seed` must be None or an int; received seed={seed!r}.")
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    # ------------------------------------------------------------------ build
    def _check_input_shapes(self, input_shape):
        shapes = _pair(input_shape, "input_shape")
        mean_shape, log_var_shape = (tuple(s) for s in shapes)
        if len(mean_shape) != len(log_var_shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(mean_shape, log_var_shape)
        ):
            raise ValueError(
                "z_mean and z_log_var must have the same shape; received "
                f"z_mean shape {mean_shape} and z_log_var shape {log_var_shape}."
            )
        if not mean_shape or mean_shape[-1] != self.latent_dim:
            raise ValueError(
                f"The last axis of z_mean and z_log_var must be latent_dim="
                f"{self.latent_dim}; received shape {mean_shape}. Make the "
                "encoder output latent_dim values, or set latent_dim to match."
            )
        return mean_shape

    def build(self, input_shape):
        self._check_input_shapes(input_shape)
        self._build_weights()

    def _build_weights(self):
        k, d = self.num_components, self.latent_dim
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
        self.log_variances = self.add_weight(
            name="log_variances", shape=(k, d), initializer="zeros", dtype="float32", autocast=False
        )
        self.built = True

    def _prior(self):
        return (
            tf.convert_to_tensor(self.logits),
            tf.convert_to_tensor(self.means),
            tf.convert_to_tensor(self.log_variances),
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
        z_mean, z_log_var = self._posterior(*_pair(inputs, "inputs"))
        logits, means, log_variances = self._prior()
        eps = keras.random.normal(
            tf.shape(z_mean), dtype="float32", seed=self.seed_generator
        )
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        if self.kl_method == "vade" or return_cluster_probabilities:
            vade, log_gamma = kl_ops.vade_kl(
                z_mean, z_log_var, logits, means, log_variances
            )
        kl = (
            vade
            if self.kl_method == "vade"
            else kl_ops.mc_kl(z, z_mean, z_log_var, logits, means, log_variances)
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
        z_mean, z_log_var = _pair(inputs, "inputs")
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
        ``z`` (a sample from ``q(z | x)``, required).
        """
        z_mean, z_log_var = self._posterior(z_mean, z_log_var)
        logits, means, log_variances = self._prior()
        if self.kl_method == "vade":
            return kl_ops.vade_kl(z_mean, z_log_var, logits, means, log_variances)[0]
        if z is None:
            raise ValueError(
                "kl_method='mc' estimates the KL at a sample: pass z, a draw "
                "from q(z | x)."
            )
        z = tf.cast(tf.convert_to_tensor(z), tf.float32)
        return kl_ops.mc_kl(z, z_mean, z_log_var, logits, means, log_variances)

    def cluster_probabilities(self, z_mean, z_log_var):
        """``gamma = q(c | x)``: ``[..., num_components]``, float32.

        ``gamma_c ∝ pi_c exp(E_q(z|x)[log N(z; mu_c, v_c)])``, computed by
        a log-softmax, so every row is finite and sums to 1. Passing
        ``z_log_var`` very negative (``-inf`` excluded) gives ``p(c |
        z_mean)``.
        """
        z_mean, z_log_var = self._posterior(z_mean, z_log_var)
        return tf.exp(kl_ops.log_responsibilities(z_mean, z_log_var, *self._prior()))

    def predict_cluster(self, z_mean, z_log_var):
        """The most probable cluster ``argmax_c gamma_c``: int32 ``[...]``."""
        return tf.argmax(
            self.cluster_probabilities(z_mean, z_log_var), axis=-1, output_type=tf.int32
        )

    @property
    def mixture_weights(self):
        """``pi = softmax(logits)``: ``[num_components]`` (a tensor)."""
        return tf.nn.softmax(tf.convert_to_tensor(self.logits))

    @property
    def stddevs(self):
        """Component standard deviations ``exp(v / 2)``: ``[K, D]``."""
        return tf.exp(0.5 * tf.convert_to_tensor(self.log_variances))

    # ------------------------------------------------------------ sampling
    def sample_prior(self, n, component=None, temperature=1.0, seed=None,
                     return_components=False):
        """Draw ``n`` latent codes from the prior: ``[n, latent_dim]``, float32.

        Each code is ``mu_c + temperature * exp(v_c / 2) * eps`` for a
        component ``c`` and standard-normal ``eps``: reparameterized per
        component, so gradients reach the means and log-variances (a learnable
        mixture latent, e.g. the input of a GAN generator as in DeLiGAN). The
        component draw itself is discrete: no gradient reaches the logits.

        Args:
            n: number of codes, a positive int (or an int scalar tensor).
            component: None (draw each code's component from ``softmax(
                logits)``), an int in ``[0, num_components)`` (every code from
                that component), or an int tensor ``[n]`` (one per code).
            temperature: number >= 0 (or scalar tensor) multiplying the
                standard deviations; 0 returns the component means.
            seed: None (the layer's seed generator advances), an int, or a
                shape ``[2]`` integer tensor (stateless, reproducible).
            return_components: also return the components, int32 ``[n]``.

        Returns:
            ``z [n, latent_dim]`` (and ``components [n]``).
        """
        if not self.built:
            raise ValueError(
                "The prior of this GMMPriorSampling layer is not built yet: "
                "call the layer on [z_mean, z_log_var] (or initialize_from) "
                "first."
            )
        checks = []
        if tf.is_tensor(n):
            checks.append(tf.debugging.assert_non_negative(n, message="`n` must be >= 0"))
        else:
            n = _check_count(n, "n")
        if tf.is_tensor(temperature):
            checks.append(tf.debugging.assert_non_negative(
                temperature, message="`temperature` must be >= 0"))
        elif isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float, np.integer, np.floating))
            and temperature >= 0
        ):
            raise ValueError(
                "`temperature` must be a number >= 0; received "
                f"temperature={temperature!r}."
            )
        seeds = tf.random.experimental.stateless_split(
            mixture_lib.stateless_seed(seed, self.seed_generator), num=2
        )
        logits, means, log_variances = self._prior()
        with tf.control_dependencies(checks):
            n = tf.identity(tf.cast(n, tf.int32))
        if component is None:
            components = tf.random.stateless_categorical(
                logits[None], n, seeds[0], dtype=tf.int32
            )[0]
        else:
            components = self._checked_components(component, n)
        loc = tf.gather(means, components)
        scale = tf.exp(0.5 * tf.gather(log_variances, components))
        eps = tf.random.stateless_normal(tf.shape(loc), seeds[1], dtype=loc.dtype)
        z = loc + tf.cast(temperature, loc.dtype) * scale * eps
        return (z, components) if return_components else z

    def _checked_components(self, component, n):
        k = self.num_components
        if isinstance(component, (int, np.integer)) and not isinstance(component, bool):
            if not 0 <= component < k:
                raise ValueError(
                    f"`component` must be in [0, {k}) (num_components={k}); "
                    f"received component={component!r}."
                )
            return tf.fill(tf.reshape(n, [1]), tf.constant(int(component), tf.int32))
        component = tf.convert_to_tensor(component)
        if not component.dtype.is_integer:
            raise ValueError(
                "`component` must be None, an int or an integer tensor; "
                f"received dtype {component.dtype.name}."
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
        with tf.control_dependencies(checks):
            if component.shape.rank == 0:
                return tf.fill(tf.reshape(n, [1]), component)
            return tf.identity(tf.broadcast_to(component, tf.reshape(n, [1])))

    # -------------------------------------------------------- initialisation
    def initialize_from(self, em):
        """Set the prior from a fitted :class:`keras_gmm.GaussianMixtureEM`.

        The standard VaDE initialisation: fit a "diag" mixture by EM on the
        encoder means of the training data (after pre-training the
        autoencoder), then copy its weights (``logits = log weights``), means
        and variances (``log_variances = log covariances``) into the prior.

        Args:
            em: a fitted ``GaussianMixtureEM`` with ``covariance_type="diag"``,
                ``num_components`` equal to this layer's, on
                ``latent_dim``-dimensional data.

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
        if em.covariance_type != "diag":
            raise ValueError(
                "initialize_from needs a GaussianMixtureEM with "
                "covariance_type='diag' (the prior has diagonal covariances); "
                f"received covariance_type={em.covariance_type!r}."
            )
        try:
            weights, means, variances = em.weights_, em.means_, em.covariances_
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
        if means.shape[-1] != self.latent_dim:
            raise ValueError(
                f"`em` was fitted on {means.shape[-1]}-dimensional data but "
                f"this layer has latent_dim={self.latent_dim}; fit it on the "
                "encoder's z_mean."
            )
        if not self.built:
            self._build_weights()
        self.logits.assign(np.log(np.maximum(weights, 1e-30)).astype(np.float32))
        self.means.assign(np.asarray(means, np.float32))
        self.log_variances.assign(np.log(variances).astype(np.float32))
        return self

    # --------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_components": self.num_components,
                "latent_dim": self.latent_dim,
                "kl_weight": self.kl_weight,
                "kl_method": self.kl_method,
                "seed": self.seed,
                "inference": self.inference,
            }
        )
        return config


def _check_count(value, name):
    if isinstance(value, (float, np.floating)):  # 2.0 is not a count
        raise ValueError(
            f"`{name}` must be a positive integer; received {name}={value!r}."
        )
    return mixture_lib.check_positive(value, name, integer=True)


def _is_shape(value):
    return isinstance(value, (list, tuple, tf.TensorShape)) or hasattr(value, "shape")


def _pair(inputs, name):
    if (
        not isinstance(inputs, (list, tuple))
        or len(inputs) != 2
        or not all(_is_shape(x) or tf.is_tensor(x) for x in inputs)
    ):
        raise ValueError(
            f"GMMPriorSampling takes `{name}` = [z_mean, z_log_var] (two "
            f"tensors of shape [..., latent_dim]); received {inputs!r}."
        )
    return inputs
