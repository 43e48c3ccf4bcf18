"""GMMConv2D: a 2-D convolution whose kernels are Gaussian mixtures."""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import covariance as covariance_lib
from keras_gmm.ops import gaussian

__all__ = ["GMMConv2D", "SUPPORTED_COVARIANCE_TYPES", "num_gaussian_params"]

#: The covariance types GMMConv2D supports for its bumps: "diag"
#: (axis-aligned ellipses), "full" (rotated ellipses, through a Cholesky
#: factor) and "spherical" (circles). ("tied" would share one shape across
#: the bumps of a kernel, which ``share_gaussians`` already expresses.)
SUPPORTED_COVARIANCE_TYPES = ("diag", "full", "spherical")

_PADDINGS = ("valid", "same")
_DATA_FORMATS = ("channels_last", "channels_first")
_EVENT_SIZE = 2  # the bumps live on the 2-D kernel grid (row, column)


def __getattr__(name):
    # Deprecated alias: the module's COVARIANCE_TYPES meant the supported
    # subset, unlike keras_gmm.ops.covariance.COVARIANCE_TYPES (all types).
    if name == "COVARIANCE_TYPES":
        warnings.warn(
            "keras_gmm.layers.gmm_conv2d.COVARIANCE_TYPES is deprecated; use "
            "SUPPORTED_COVARIANCE_TYPES (keras_gmm.ops.covariance."
            "COVARIANCE_TYPES lists every covariance type).",
            DeprecationWarning, stacklevel=2,
        )
        return SUPPORTED_COVARIANCE_TYPES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_covariance_type(covariance_type):
    return covariance_lib.check(covariance_type, supported=SUPPORTED_COVARIANCE_TYPES)


def num_gaussian_params(covariance_type):
    """Parameters of one bump's geometry: 2 for the mean plus the scale
    parameters of ``covariance_type`` (2 for "diag", 3 for "full", 1 for
    "spherical")."""
    cov = covariance_lib.get(_check_covariance_type(covariance_type))
    return _EVENT_SIZE + cov.num_scale_params(1, _EVENT_SIZE)


def _int_pair(value, name):
    """An int or a pair of ints >= 1 -> a tuple of two Python ints."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    try:
        return _validation.check_pair(items, name, check=_validation.check_positive_int)
    except ValueError:
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of 2 positive "
            f"integers; received {name}={_validation.describe(value)}."
        ) from None


def _conv_output_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    extent = dilation * (kernel - 1) + 1
    return -(-(length - extent + 1) // stride)


def _lattice(num_components, kernel_size):
    """Initial bump means ``[K, 2]`` (pixels from the kernel's centre).

    The window ``[-kh/2, kh/2] x [-kw/2, kw/2]`` (grid points at integer
    offsets from its centre) is cut into an ``r x c`` lattice of cells
    (``r = ceil(sqrt(K))``, ``c = ceil(K / r)``; ``kh x kw`` cells when ``K =
    kh * kw``, whose centres are then the grid points); the means are the
    centres of the first K cells, row-major.
    """
    rows = math.ceil(math.sqrt(num_components))
    cols = math.ceil(num_components / rows)
    if num_components == kernel_size[0] * kernel_size[1]:
        rows, cols = kernel_size
    centres = []
    for n, size in zip((rows, cols), kernel_size):
        centres.append(-size / 2 + (np.arange(n) + 0.5) * size / n)
    grid = np.stack(np.meshgrid(*centres, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid[:num_components]


def _initial_bumps(means, scales, kernel_size):
    """NumPy: the normalised axis-aligned bumps ``[P, K]`` of the initial
    geometry (for the default amplitude initializer's variance)."""
    offsets = _grid_offsets(kernel_size)
    log_g = -0.5 * np.sum(((offsets[:, None, :] - means) / scales) ** 2, axis=-1)
    log_g -= log_g.max(axis=0)
    g = np.exp(log_g)
    return g / g.sum(axis=0)


def _grid_offsets(kernel_size):
    """``[kh * kw, 2]`` offsets (row, column) of the kernel taps from the
    kernel's centre, row-major (the order of a reshaped ``[kh, kw]``)."""
    kh, kw = kernel_size
    rows = np.arange(kh) - (kh - 1) / 2
    cols = np.arange(kw) - (kw - 1) / 2
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMConv2D(keras.layers.Layer):
    """2-D convolution whose kernels are mixtures of Gaussian bumps.

    Each kernel slice is a weighted sum of ``K`` Gaussian bumps on the
    ``kh x kw`` kernel grid::

        W[u, i, o] = sum_k a[k, i, o] * G_k(u),
        G_k(u) = N(u | mu_k, Sigma_k) / sum_v N(v | mu_k, Sigma_k),

    where ``u`` runs over the grid offsets (row, column) from the kernel's
    centre, ``N`` is a 2-D Gaussian density (log-densities from
    :func:`keras_gmm.ops.gaussian.log_gaussian_prob`, normalised over the grid
    with a log-softmax) and ``a`` are the amplitudes. The means stay inside the
    window, ``mu = (kh/2, kw/2) * tanh(raw)``; the scales follow
    :mod:`keras_gmm.mixture`: ``softplus(raw) + min_scale`` (in pixels), and
    for "full" a Cholesky factor with such a diagonal. The dense kernel is
    built from these parameters in every call (a few thousand flops) and passed
    to the backend convolution (``keras.ops.conv``), so the layer runs at the
    speed of :class:`keras.layers.Conv2D` (``benchmarks/conv.py``).

    With ``share_gaussians=True`` (default) the K bumps' geometry is shared by
    all (input, output) channel pairs and only the amplitudes are per pair:
    ``K * in * filters + K * g`` parameters (``g = 2 + 2`` for "diag",
    ``2 + 3`` for "full", ``2 + 1`` for "spherical") instead of Conv2D's
    ``kh * kw * in * filters``, plus ``filters`` biases. With
    ``share_gaussians=False`` each pair has its own bumps:
    ``K * in * filters * (1 + g)`` (plus biases).

    Args:
        filters: number of output channels (>= 1).
        kernel_size: int or pair of ints ``(kh, kw)``, the kernel grid.
        num_components: number of bumps ``K`` per kernel slice (>= 1).
        covariance_type: "diag" (default), "full" or "spherical".
        share_gaussians: share the bumps' geometry across channel pairs.
        strides, padding ("valid"/"same"), dilation_rate, data_format,
            activation, use_bias, bias_initializer: as in
            :class:`keras.layers.Conv2D` (strides > 1 together with
            dilation_rate > 1 is not supported, as there).
        amplitude_initializer: initializer of the ``[K, in, filters]``
            amplitudes. Default (None): a uniform draw scaled so that the
            initial dense kernel has the variance of Conv2D's default
            (Glorot-uniform) kernel, given the initial bumps.
        amplitude_regularizer, bias_regularizer: optional regularizers.
        min_scale: floor (in pixels) added to every softplus scale (default
            0.1): the narrowest bump is a single tap.
        initial_scale: standard deviation (pixels) of every bump at the start
            (default 0.5, > ``min_scale``): sharp bumps, which training moves
            and widens (wide initial bumps make blurred kernels that train to
            lower accuracy, see ``keras_gmm/zoo/gmmconv_digits.py``).
        geometry_gain: positive gain ``g`` of the bumps' parameters: the
            stored mean and scale parameters are the unconstrained values
            divided by ``g`` (default 1, a plain parameterization). With
            optimizers whose steps have a set size per weight (Adam), ``g``
            makes the geometry move ``g`` times faster than the amplitudes;
            the digits zoo model uses 10 (as the MDN head's gains).
        **kwargs: base layer arguments (``name``, ``dtype``,
            ``activity_regularizer``, ...).

    The bumps start at the centres of a lattice of K cells over the window
    (``K = kh * kw``: on the grid points), with standard deviation
    ``initial_scale``.

    Call arguments:
        inputs: a 4-D tensor.

    Input shape:
        ``(batch, rows, cols, channels)`` for "channels_last",
        ``(batch, channels, rows, cols)`` for "channels_first".

    Output shape:
        As :class:`keras.layers.Conv2D`: ``(batch, new_rows, new_cols,
        filters)`` (channels last). The output has the layer's compute dtype,
        as Conv2D's (float16 under ``mixed_float16``); the parameters stay
        float32 and the kernel (:attr:`kernel`) is built in float32, then
        cast.

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> conv = keras_gmm.GMMConv2D(8, 5, num_components=4, padding="same")
    >>> y = conv(np.random.rand(2, 16, 16, 3).astype("float32"))
    >>> y.shape, conv.kernel.shape, conv.count_params()
    (TensorShape([2, 16, 16, 8]), TensorShape([5, 5, 3, 8]), 120)
    >>> conv.means.shape, conv.stddevs.shape  # shared bumps, pixels from centre
    (TensorShape([4, 2]), TensorShape([4, 2]))

    References:
        Jacobsen et al., "Structured Receptive Fields in CNNs", CVPR 2016.
        Shelhamer et al., "Blurring the Line Between Structure and Learning to
        Optimize and Adapt Receptive Fields", arXiv:1904.11487, 2019.
        Khalfaoui-Hassani et al., "Dilated Convolution with Learnable Spacings:
        beyond bilinear interpolation", arXiv:2306.00817, 2023.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        num_components=4,
        covariance_type="diag",
        share_gaussians=True,
        strides=1,
        padding="valid",
        dilation_rate=1,
        data_format=None,
        activation=None,
        use_bias=True,
        amplitude_initializer=None,
        bias_initializer="zeros",
        amplitude_regularizer=None,
        bias_regularizer=None,
        min_scale=0.1,
        initial_scale=0.5,
        geometry_gain=1.0,
        **kwargs,
    ):
        # The Gaussian math runs in float32 also under mixed precision: the
        # kernel is built from the float32 variables and cast once.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.filters = _validation.check_positive_int(filters, "filters")
        self.kernel_size = _int_pair(kernel_size, "kernel_size")
        self.num_components = _validation.check_positive_int(
            num_components, "num_components",
            hint="the number of Gaussian bumps per kernel slice",
        )
        self.covariance_type = _check_covariance_type(covariance_type)
        self._covariance = covariance_lib.get(self.covariance_type)
        self.share_gaussians = _validation.check_bool(share_gaussians, "share_gaussians")
        self.strides = _int_pair(strides, "strides")
        self.dilation_rate = _int_pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` is not supported together with `dilation_rate "
                f"> 1` (as in keras.layers.Conv2D); received strides="
                f"{self.strides} and dilation_rate={self.dilation_rate}."
            )
        self.padding = _validation.check_one_of(
            padding.lower() if isinstance(padding, str) else padding,
            "padding", _PADDINGS,
        )
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = _validation.check_one_of(
            data_format, "data_format", _DATA_FORMATS,
            hint="or None for keras.config.image_data_format()",
        )
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.check_bool(use_bias, "use_bias")
        self.amplitude_initializer = (
            None if amplitude_initializer is None
            else keras.initializers.get(amplitude_initializer)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.amplitude_regularizer = keras.regularizers.get(amplitude_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.min_scale = mixture_lib.check_min_scale(min_scale)
        self.initial_scale = _validation.check_positive(initial_scale, "initial_scale")
        if self.initial_scale <= self.min_scale:
            raise ValueError(
                "`initial_scale` must exceed `min_scale` (the floor of every "
                f"scale); received initial_scale={initial_scale!r} with "
                f"min_scale={min_scale!r}."
            )
        self.geometry_gain = _validation.check_positive(geometry_gain, "geometry_gain")
        self._channel_axis = -1 if data_format == "channels_last" else 1
        self._offsets = _grid_offsets(self.kernel_size).astype(np.float32)

    # ------------------------------------------------------------------ build
    def _check_input_shape(self, input_shape):
        if input_shape is None or len(input_shape) != 4:
            rank = None if input_shape is None else len(input_shape)
            raise ValueError(
                f"GMMConv2D expects 4-D inputs (batch, rows, cols, channels) "
                f"or, with data_format='channels_first', (batch, channels, "
                f"rows, cols); received an input of rank {rank} with shape "
                f"{None if input_shape is None else tuple(input_shape)}."
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                "The channel axis of the input to GMMConv2D must be known "
                f"(data_format={self.data_format!r}); received input shape "
                f"{tuple(input_shape)}."
            )
        for length in self._output_spatial(input_shape):
            if length is not None and length <= 0:
                raise ValueError(
                    "GMMConv2D: the computed output size would be zero or "
                    f"negative (as keras.layers.Conv2D refuses); received an "
                    f"input of shape {tuple(input_shape)} with kernel_size="
                    f"{self.kernel_size}, dilation_rate={self.dilation_rate}, "
                    f"strides={self.strides}, padding={self.padding!r}. Use "
                    "padding='same', a smaller kernel or dilation, or larger "
                    "inputs."
                )
        return int(channels)

    def _spatial_axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def _output_spatial(self, input_shape):
        """The output's (rows, cols) for ``input_shape`` (None where unknown)."""
        return tuple(
            _conv_output_length(
                None if input_shape[axis] is None else int(input_shape[axis]),
                k, s, d, self.padding,
            )
            for axis, k, s, d in zip(
                self._spatial_axes(), self.kernel_size, self.strides,
                self.dilation_rate,
            )
        )

    def _geometry_shape(self, size):
        """Shape of a per-bump parameter with ``size`` values per bump."""
        k = self.num_components
        if self.share_gaussians:
            return (k, size)
        return (self.input_channels, self.filters, k, size)

    def _scale_size(self):
        return num_gaussian_params(self.covariance_type) - _EVENT_SIZE

    def _initial_geometry(self):
        """Initial means ``[K, 2]`` (the lattice of :func:`_lattice`) and
        standard deviations ``[2]`` (``initial_scale``), in pixels."""
        means = _lattice(self.num_components, self.kernel_size)
        return means, np.full(2, self.initial_scale)

    def _init_locs(self, shape, dtype=None):
        means, _ = self._initial_geometry()
        half = np.array(self.kernel_size, np.float64) / 2
        raw = np.arctanh(means / half)
        raw = raw / self.geometry_gain
        return tf.constant(np.broadcast_to(raw, shape), dtype or "float32")

    def _init_scales(self, shape, dtype=None):
        _, scales = self._initial_geometry()
        raw = mixture_lib.inverse_scale_transform(scales, self.min_scale)
        # One bump's raw scale parameters (for "full": the diagonal, then a
        # zero off-diagonal), all standard deviations equal.
        block = self._covariance.initial_raw_scales(1, _EVENT_SIZE, float(raw[0]))
        block = block / self.geometry_gain
        return tf.constant(np.broadcast_to(block, shape), dtype or "float32")

    def _default_amplitude_initializer(self):
        # Var(W[u]) = Var(a) * sum_k G_k(u)^2; matching Glorot's 2 / (P (in +
        # out)) on average over the P taps gives Var(a) = 2 / ((in + out) S),
        # S = sum_{k,u} G_k(u)^2; VarianceScaling(fan_avg) on [K, in, out]
        # draws with Var = scale * 2 / (K (in + out)), hence scale = K / S.
        means, scales = self._initial_geometry()
        bumps = _initial_bumps(means, scales, self.kernel_size)
        scale = self.num_components / float(np.sum(bumps**2))
        return keras.initializers.VarianceScaling(
            scale=scale, mode="fan_avg", distribution="uniform"
        )

    def build(self, input_shape):
        self.input_channels = self._check_input_shape(input_shape)
        k = self.num_components
        initializer = self.amplitude_initializer
        if initializer is None:
            initializer = self._default_amplitude_initializer()
        self.amplitudes = self.add_weight(
            name="amplitudes",
            shape=(k, self.input_channels, self.filters),
            initializer=initializer,
            regularizer=self.amplitude_regularizer,
        )
        self.locs = self.add_weight(
            name="locs",
            shape=self._geometry_shape(_EVENT_SIZE),
            initializer=self._init_locs,
        )
        self.scales = self.add_weight(
            name="scales",
            shape=self._geometry_shape(self._scale_size()),
            initializer=self._init_scales,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None

    # ---------------------------------------------------------- the geometry
    def _mixture(self):
        """The bumps as a :class:`keras_gmm.mixture.MixtureParams` (float32):
        means ``[..., K, 2]`` (pixels from the kernel's centre) and precision
        Cholesky factors, through :func:`keras_gmm.mixture.split_params`."""
        gain = self.geometry_gain
        locs = gain * tf.cast(tf.convert_to_tensor(self.locs), tf.float32)
        raw_scales = gain * tf.cast(tf.convert_to_tensor(self.scales), tf.float32)
        half = tf.constant([s / 2 for s in self.kernel_size], tf.float32)
        locs = half * tf.tanh(locs)
        lead = tuple(locs.shape[:-2])  # () shared, (in, filters) per pair
        k = self.num_components
        flat = tf.concat(
            [
                tf.zeros(lead + (k,), tf.float32),  # logits (unused)
                tf.reshape(locs, lead + (k * _EVENT_SIZE,)),
                tf.reshape(raw_scales, lead + (k * self._scale_size(),)),
            ],
            axis=-1,
        )
        return mixture_lib.split_params(
            flat, k, _EVENT_SIZE, self.covariance_type, self.min_scale
        )

    def _log_bumps(self):
        """``log G_k(u)``: ``[P, K]`` shared, ``[P, in, filters, K]`` per pair."""
        m = self._mixture()
        lead = tuple(m.means.shape[:-1])  # (K,) shared, (in, filters, K) per pair
        # Every bump of every pair as one component axis: the offsets [P, 2]
        # are then un-batched points, which log_gaussian_prob evaluates with
        # matrix products (no [P, in, filters, K, 2, 2] batch of 2x2 products).
        n = int(np.prod(lead))
        prec_chol = m.precisions_cholesky
        prec_chol = tf.reshape(prec_chol, (n,) + tuple(prec_chol.shape[len(lead):]))
        log_density = gaussian.log_gaussian_prob(
            tf.constant(self._offsets),
            tf.reshape(m.means, (n, _EVENT_SIZE)),
            prec_chol,
            self.covariance_type,
        )
        log_density = tf.reshape(log_density, (-1,) + lead)
        return tf.nn.log_softmax(log_density, axis=0)  # normalise over the grid

    def _dense_kernel(self):
        bumps = tf.exp(self._log_bumps())
        amplitudes = tf.cast(tf.convert_to_tensor(self.amplitudes), tf.float32)
        if self.share_gaussians:
            kernel = tf.einsum("pk,kio->pio", bumps, amplitudes)
        else:
            kernel = tf.einsum("piok,kio->pio", bumps, amplitudes)
        return tf.reshape(
            kernel, self.kernel_size + (self.input_channels, self.filters)
        )

    @property
    def kernel(self):
        """The dense kernel ``[kh, kw, in, filters]`` (float32) built from the
        current parameters: what the convolution uses."""
        return self._dense_kernel()

    @property
    def bumps(self):
        """The normalised bumps ``G_k`` on the grid (float32): ``[kh, kw, K]``
        shared, ``[kh, kw, in, filters, K]`` per pair."""
        g = tf.exp(self._log_bumps())
        return tf.reshape(g, self.kernel_size + tuple(g.shape[1:]))

    @property
    def means(self):
        """Bump means (row, column) in pixels from the kernel's centre:
        ``[K, 2]`` shared, ``[in, filters, K, 2]`` per pair."""
        return self._mixture().means

    @property
    def stddevs(self):
        """Marginal standard deviations of the bumps (pixels), shaped as
        :attr:`means`."""
        return self._mixture().stddevs()

    @property
    def covariances(self):
        """Bump covariances ``[..., K, 2, 2]`` (pixels squared)."""
        return self._mixture().covariances()

    # ------------------------------------------------------------------- call
    def call(self, inputs):
        channels = self._check_input_shape(inputs.shape)
        if channels != self.input_channels:
            raise ValueError(
                f"GMMConv2D was built for {self.input_channels} input channels; "
                f"received an input with {channels} channels (shape "
                f"{tuple(inputs.shape)}, data_format={self.data_format!r})."
            )
        inputs = self._assert_spatial_size(inputs)
        dtype = self.compute_dtype
        inputs = keras.ops.cast(inputs, dtype)
        kernel = keras.ops.cast(self._dense_kernel(), dtype)
        outputs = keras.ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            bias = keras.ops.cast(self.bias, dtype)
            if self.data_format == "channels_first":
                bias = keras.ops.reshape(bias, (1, self.filters, 1, 1))
            outputs = keras.ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _assert_spatial_size(self, inputs):
        """In-graph, for spatial sizes unknown when traced: with
        padding="valid" each must cover the dilated kernel (the check
        :meth:`_check_input_shape` makes on static shapes)."""
        if self.padding != "valid":
            return inputs
        checks = []
        for axis, k, d in zip(self._spatial_axes(), self.kernel_size, self.dilation_rate):
            if inputs.shape[axis] is None:
                extent = d * (k - 1) + 1
                checks.append(tf.debugging.assert_greater_equal(
                    tf.shape(inputs)[axis], extent,
                    message=(
                        "GMMConv2D: the computed output size would be zero or "
                        f"negative: with padding='valid' every spatial size must "
                        f"be >= {extent} (kernel_size={self.kernel_size}, "
                        f"dilation_rate={self.dilation_rate})"
                    ),
                ))
        if not checks:
            return inputs
        with tf.control_dependencies(checks):
            return tf.identity(inputs)

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        new = self._output_spatial(input_shape)
        if self.data_format == "channels_last":
            return (input_shape[0],) + new + (self.filters,)
        return (input_shape[0], self.filters) + new

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_components": self.num_components,
                "covariance_type": self.covariance_type,
                "share_gaussians": self.share_gaussians,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "data_format": self.data_format,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "amplitude_initializer": (
                    None if self.amplitude_initializer is None
                    else keras.initializers.serialize(self.amplitude_initializer)
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "amplitude_regularizer": keras.regularizers.serialize(
                    self.amplitude_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "min_scale": self.min_scale,
                "initial_scale": self.initial_scale,
                "geometry_gain": self.geometry_gain,
            }
        )
        return config
