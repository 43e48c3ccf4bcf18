"""MixtureDensityHead: a network output that is a Gaussian mixture."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import covariance as covariance_lib
from keras_gmm.losses import GMMNegLogLik, check_targets

__all__ = ["MixtureDensityHead"]

# Initial standard deviation of every component, and spread (standard
# deviation) of the initial component means around zero.
_INITIAL_SCALE = 0.1
_INITIAL_LOC_SPREAD = 0.3
# The logit and scale columns of the kernel start this much smaller than the
# kernel initializer draws them, so that the initial mixture weights are near
# uniform and the scales near _INITIAL_SCALE whatever the input features are.
_SMALL_KERNEL_FACTOR = 0.1


@keras.saving.register_keras_serializable(package="keras_gmm")
class MixtureDensityHead(mixture_lib.MixtureLayoutMixin, keras.layers.Layer):
    """Maps features to the parameters of a Gaussian mixture (an MDN head).

    A mixture density network (Bishop, 1994) predicts, for each input, a
    mixture ``p(y | x) = sum_k w_k(x) N(y | mu_k(x), Sigma_k(x))``. This layer
    is the affine map from features ``[..., F]`` to the flat mixture parameters
    ``[..., params_size]`` (layout in :mod:`keras_gmm.mixture`): logits, means
    and raw scales. The constraints (softmax weights, ``softplus + min_scale``
    scales, a triangular factor with positive diagonal for "full") are applied
    when the parameters are read, by :meth:`distribution`, :meth:`sample`, ...
    and by the matching loss :meth:`loss` (a :class:`keras_gmm.GMMNegLogLik`).

    Initialisation starts training in a stable place: mixture weights near
    uniform, component standard deviations of 0.1 and component means spread
    around zero (targets are best standardised or scaled to about [-1, 1]).

    The three groups of outputs are computed with fixed gains,
    ``params = x @ (kernel * gains) + bias * gains``, the stored kernel and bias being
    initialised divided by the gains (so the initial function is unchanged).
    With optimizers such as Adam, whose steps have a set size per weight, a
    gain ``g`` makes that group move ``g`` times faster: the default gains
    (logits 5, locations 2, scales 5) let the mixture weights and scales keep
    pace with the means, which is where MDN training is slowest
    (``benchmarks/mdn.py`` measures the effect against plain TFP). Set all
    three to 1.0 for a plain affine head.

    Args:
        num_components: number of mixture components ``K`` (>= 1).
        event_size: dimension ``D`` of the target (>= 1).
        covariance_type: "diag" (default), "full" (a full covariance per
            component, through a Cholesky factor), "spherical" (one scale per
            component) or "tied" (one full covariance shared by the components).
        min_scale: positive floor added to every softplus scale (default 1e-3);
            bounds every component's peak density.
        logits_gain, means_gain, scale_gain: positive gains of the three
            output groups (defaults 5, 2, 5; see above). ``locs_gain`` is the
            deprecated name of ``means_gain``.
        kernel_initializer: initializer of the ``[F, params_size]`` kernel.
        kernel_regularizer, bias_regularizer: optional regularizers.
        seed: optional int seeding the initial component means and the default
            sampling stream.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: features ``[..., F]``.

    Input shape:
        ``(..., F)``: any number of leading dimensions (batch, time, ...).

    Output shape:
        ``(..., params_size)``, always float32 (also under ``mixed_float16``,
        where the affine map runs in float16 and the result is cast).

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> head = keras_gmm.MixtureDensityHead(num_components=5, event_size=1)
    >>> model = keras.Sequential(
    ...     [keras.Input((1,)), keras.layers.Dense(32, activation="relu"), head])
    >>> model.compile("adam", loss=head.loss())
    >>> x = np.random.rand(256, 1).astype("float32"); y = 2 * x
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> params = model(x[:4])
    >>> head.sample(params, seed=0).shape, head.mean(params).shape
    (TensorShape([4, 1]), TensorShape([4, 1]))

    Reference:
        Bishop, "Mixture Density Networks", Aston University NCRG/94/004, 1994.
    """

    def __init__(
        self,
        num_components,
        event_size,
        covariance_type="diag",
        min_scale=1e-3,
        logits_gain=5.0,
        means_gain=2.0,
        scale_gain=5.0,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed=None,
        **kwargs,
    ):
        if "locs_gain" in kwargs:  # the name before 0.2 (saved configs use it)
            warnings.warn(
                "MixtureDensityHead(locs_gain=...) is deprecated; use means_gain.",
                DeprecationWarning, stacklevel=2,
            )
            means_gain = kwargs.pop("locs_gain")
        super().__init__(**kwargs)
        self.layout = mixture_lib.MixtureLayout(
            num_components, event_size, covariance_type, min_scale
        )
        self.units = self.layout.params_size
        self.logits_gain = _validation.check_positive(logits_gain, "logits_gain")
        self.means_gain = _validation.check_positive(means_gain, "means_gain")
        self.scale_gain = _validation.check_positive(scale_gain, "scale_gain")
        self.seed = _validation.check_seed(seed)
        # The head is applied position by position: a mask over the leading
        # (e.g. time) axes of the input passes through unchanged.
        self.supports_masking = True
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self._slices = self.layout.slices()
        gains = np.empty(self.units, dtype=np.float32)
        gains[self._slices["logits"]] = self.logits_gain
        gains[self._slices["means"]] = self.means_gain
        gains[self._slices["scale"]] = self.scale_gain
        self._gains = gains

    @property
    def locs_gain(self):
        """Deprecated name of :attr:`means_gain`."""
        return self.means_gain

    # ------------------------------------------------------------------ build
    # The stored kernel and bias are the affine map divided by the gains, so
    # that ``x @ (kernel * gains) + bias * gains`` starts at the intended values.
    def _init_kernel(self, shape, dtype=None):
        factor = 1.0 / self._gains
        factor[self._slices["logits"]] *= _SMALL_KERNEL_FACTOR
        factor[self._slices["scale"]] *= _SMALL_KERNEL_FACTOR
        kernel = self.kernel_initializer(shape, dtype=dtype or "float32")
        return kernel * tf.constant(factor, dtype=kernel.dtype)

    def _init_bias(self, shape, dtype=None):
        dtype = dtype or "float32"
        base = np.zeros(shape, dtype=np.float64)
        raw_scale = mixture_lib.inverse_scale_transform(
            max(_INITIAL_SCALE, 2.0 * self.min_scale), self.min_scale
        )
        base[self._slices["scale"]] = covariance_lib.get(
            self.covariance_type
        ).initial_raw_scales(self.num_components, self.event_size, raw_scale)
        loc_mask = np.zeros(shape, dtype=np.float64)
        loc_mask[self._slices["means"]] = _INITIAL_LOC_SPREAD
        # Spread means: seeded by `seed`, else by keras.utils.set_random_seed.
        noise = keras.random.normal(shape, seed=self.seed_generator, dtype=dtype)
        bias = tf.constant(base / self._gains, dtype) + noise * tf.constant(
            loc_mask / self._gains, dtype
        )
        return bias

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last axis of the input to MixtureDensityHead must be "
                f"known; received input_shape={tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, self.units),
            initializer=self._init_kernel,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(self.units,),
            initializer=self._init_bias,
            regularizer=self.bias_regularizer,
        )

    def call(self, inputs):
        kernel, bias = self.kernel, self.bias  # in the compute dtype
        # The gains scale the (small) weights rather than the [batch, P]
        # output: fewer flops, and the same function.
        gains = keras.ops.convert_to_tensor(self._gains, dtype=kernel.dtype)
        outputs = keras.ops.matmul(inputs, keras.ops.multiply(kernel, gains))
        outputs = keras.ops.add(outputs, keras.ops.multiply(bias, gains))
        return keras.ops.cast(outputs, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype="float32"
        )

    # ------------------------------------------------- reading the parameters
    def loss(self, **kwargs):
        """The matching :class:`keras_gmm.GMMNegLogLik` (same K, D, type, floor)."""
        return GMMNegLogLik(**self.layout.get_config(), **kwargs)

    def distribution(self, params):
        """A ``tfd.MixtureSameFamily`` over ``[..., event_size]``."""
        return mixture_lib.distribution(self.mixture(params))

    def log_prob(self, params, y):
        """``log p(y | params)``: ``[...]``."""
        params = tf.convert_to_tensor(params)
        y = check_targets(tf.cast(y, tf.float32), self.event_size, params.shape.rank, "y")
        return mixture_lib.log_prob(self.mixture(params), y)

    def component_params(self, params):
        """Named, constrained parameters: ``weights [..., K]``, ``means
        [..., K, D]``, ``stddevs [..., K, D]`` (marginal standard deviations,
        for every covariance type) and, for "full" ``scale_tril [..., K, D, D]``
        / for "tied" ``scale_tril [..., D, D]`` (covariance Cholesky factors)."""
        m = self.mixture(params)
        cov = m.covariance
        # the same [..., K, D] for every type (a tied one broadcast)
        stddevs = cov.per_component(m.stddevs(), self.num_components, event_rank=1)
        out = {"weights": m.weights, "means": m.means, "stddevs": stddevs}
        if cov.matrix:
            out["scale_tril"] = m.scale_tril()
        return out

    def mean(self, params):
        """Mixture mean ``[..., D]``."""
        return mixture_lib.mean(self.mixture(params))

    def variance(self, params):
        """Mixture variance (diagonal of the covariance) ``[..., D]``."""
        return mixture_lib.variance(self.mixture(params))

    def covariance(self, params):
        """Mixture covariance (law of total variance) ``[..., D, D]``."""
        return mixture_lib.covariance(self.mixture(params))

    def greedy(self, params):
        """Mean of the most probable component ``[..., D]`` (greedy decoding)."""
        return mixture_lib.greedy(self.mixture(params))

    def sample(self, params, temperature=1.0, sigma_temperature=1.0, seed=None):
        """Draw one sample per leading index, in-graph: ``[..., D]``.

        ``temperature`` divides the mixture logits before the component is
        drawn (``< 1`` favours likely components, ``0`` always picks the most
        probable one); ``sigma_temperature`` multiplies the standard deviations
        of the drawn component (``0`` returns its mean). With both at 0 the
        result is :meth:`greedy`.

        Args:
            params: ``[..., params_size]`` from this layer.
            temperature, sigma_temperature: non-negative floats or scalars.
            seed: None (the layer's seed generator advances), an int, or a
                shape ``[2]`` integer tensor (stateless, reproducible).
        """
        return mixture_lib.sample(
            self.mixture(params),
            mixture_lib.stateless_seed(seed, self.seed_generator),
            temperature=temperature,
            sigma_temperature=sigma_temperature,
        )

    # ------------------------------------------------------------- config
    @classmethod
    def from_config(cls, config):
        # Files saved before 0.2 store `locs_gain`: read it as `means_gain`
        # without a warning (the file is not the user's code).
        config = dict(config)
        if "locs_gain" in config:
            config["means_gain"] = config.pop("locs_gain")
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(self.layout.get_config())
        config.update(
            {
                "logits_gain": self.logits_gain,
                "means_gain": self.means_gain,
                "scale_gain": self.scale_gain,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "seed": self.seed,
            }
        )
        return config
