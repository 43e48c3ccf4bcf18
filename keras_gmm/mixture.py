"""How a Gaussian mixture is laid out in a flat tensor, and what it can do.

A mixture of ``K`` Gaussians over a ``D``-dimensional event is stored in the
last axis of a flat tensor, in this order (TFP's ``params_size``/``new`` idea,
as plain functions)::

    [ logits (K) | locs (K*D, component-major) | scale parameters ]

and the scale parameters depend on the covariance type:

============  ==================  ==============================================
type          scale parameters    meaning
============  ==================  ==============================================
"diag"        K*D                 stddev = softplus(raw) + min_scale
"spherical"   K                   one stddev per component, same transform
"full"        K * D(D+1)/2        per component: D diagonal entries, then the
                                  D(D-1)/2 strictly-lower entries (row-major)
                                  of ``W = inv(L)``, the inverse of the
                                  covariance Cholesky factor ``L``; the
                                  diagonal of ``L`` is softplus(raw)+min_scale
"tied"        D(D+1)/2            one such factor shared by all components
============  ==================  ==============================================

So every scale is positive and bounded below by ``min_scale`` (for "full" the
diagonal of the covariance Cholesky factor, i.e. the conditional standard
deviations, is floored), which bounds the peak density of every component and
keeps a negative log-likelihood from diverging.

:func:`split_params` turns the flat tensor into a :class:`MixtureParams` whose
scales are precision Cholesky factors in scikit-learn's layout
(``precision = P @ P.T``, see :mod:`keras_gmm.ops.gaussian`): for "full" that is
``P = W.T``, so the log-density needs one product and no solve.
"""

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_gmm.ops import gaussian
from keras_gmm.ops.gaussian import COVARIANCE_TYPES, check_covariance_type

tfd = tfp.distributions

__all__ = [
    "COVARIANCE_TYPES",
    "MixtureLayout",
    "MixtureLayoutMixin",
    "MixtureParams",
    "check_min_scale",
    "check_positive",
    "stateless_seed",
    "params_size",
    "param_slices",
    "split_params",
    "inverse_scale_transform",
    "distribution",
    "log_prob",
    "mean",
    "covariance",
    "variance",
    "greedy",
    "sample",
]


class MixtureParams(NamedTuple):
    """A Gaussian mixture with (possibly batched) parameters.

    Attributes:
        logits: ``[..., K]`` unnormalised log mixture weights.
        locs: ``[..., K, D]`` component means.
        precisions_cholesky: precision Cholesky factors, shaped per covariance
            type as described in :mod:`keras_gmm.ops.gaussian`.
        covariance_type: "full", "tied", "diag" or "spherical".
    """

    logits: tf.Tensor
    locs: tf.Tensor
    precisions_cholesky: tf.Tensor
    covariance_type: str

    @property
    def num_components(self):
        return self.locs.shape[-2]

    @property
    def event_size(self):
        return self.locs.shape[-1]

    @property
    def log_weights(self):
        return tf.nn.log_softmax(self.logits, axis=-1)

    @property
    def weights(self):
        return tf.nn.softmax(self.logits, axis=-1)

    def stddevs(self):
        """Marginal standard deviations, ``[..., K, D]`` (``[..., D]`` tied)."""
        return gaussian.stddevs(
            self.precisions_cholesky, self.covariance_type, self.event_size
        )

    def covariances(self):
        """Component covariances, ``[..., K, D, D]`` (``[..., D, D]`` tied)."""
        return gaussian.covariances(
            self.precisions_cholesky, self.covariance_type, self.event_size
        )

    def scale_tril(self):
        """Lower Cholesky factors of the component covariances."""
        return gaussian.covariance_cholesky(
            self.precisions_cholesky, self.covariance_type, self.event_size
        )


# --------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------
def check_positive(value, name, integer=False, hint=""):
    """``value`` as a float (or int) if it is a finite number > 0 (a positive
    integer when ``integer``), else a ValueError naming the argument and value.

    The one validator of positive arguments for every keras_gmm class.
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and value > 0
        and (not integer or float(value).is_integer())
    )
    if not ok:
        what = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"`{name}` must be {what}{hint}; received {name}={value!r}.")
    return int(value) if integer else float(value)


def _check_positive_int(value, name):
    if isinstance(value, (float, np.floating)):  # 2.0 is not a count
        raise ValueError(
            f"`{name}` must be a positive integer; received {name}={value!r}."
        )
    return check_positive(value, name, integer=True)


def _num_scale_params(num_components, event_size, covariance_type):
    tril = event_size * (event_size + 1) // 2
    return {
        "full": num_components * tril,
        "tied": tril,
        "diag": num_components * event_size,
        "spherical": num_components,
    }[covariance_type]


def params_size(num_components, event_size, covariance_type="diag"):
    """Number of values in the flat parameter tensor of a mixture.

    This is how many units the layer before a mixture must output.

    Example:

    >>> params_size(5, 1, "diag")
    15
    >>> params_size(3, 2, "full")  # 3 logits + 6 locs + 3 * 3 tril entries
    18
    """
    num_components = _check_positive_int(num_components, "num_components")
    event_size = _check_positive_int(event_size, "event_size")
    check_covariance_type(covariance_type)
    return (
        num_components
        + num_components * event_size
        + _num_scale_params(num_components, event_size, covariance_type)
    )


def param_slices(num_components, event_size, covariance_type="diag"):
    """``{"logits": slice, "locs": slice, "scale": slice}`` into the flat axis."""
    size = params_size(num_components, event_size, covariance_type)
    k, kd = num_components, num_components * event_size
    return {
        "logits": slice(0, k),
        "locs": slice(k, k + kd),
        "scale": slice(k + kd, size),
    }


def _unflatten_last(x, shape):
    """Reshape the last axis of ``x`` into ``shape`` (leading dims kept)."""
    lead = x.shape[:-1]
    if lead.is_fully_defined():
        return tf.reshape(x, lead.as_list() + list(shape))
    return tf.reshape(x, tf.concat([tf.shape(x)[:-1], shape], axis=0))


def _positive_scale(raw, min_scale):
    return tf.math.softplus(raw) + tf.cast(min_scale, raw.dtype)


def inverse_scale_transform(scale, min_scale):
    """The raw value whose transform ``softplus(raw) + min_scale`` is ``scale``.

    Used to initialise layers so that their scales start at a chosen value.
    """
    target = np.asarray(scale, dtype=np.float64) - min_scale
    if np.any(target <= 0):
        raise ValueError(
            f"`scale` must exceed `min_scale`={min_scale}; received scale={scale!r}."
        )
    return np.log(np.expm1(target))


def _tril_gather_indices(event_size):
    """Gather indices that place [diag (D), strict lower (row-major), 0] into a
    ``D x D`` lower-triangular matrix (flattened)."""
    d = event_size
    zero_slot = d * (d + 1) // 2
    idx = np.full((d, d), zero_slot, dtype=np.int32)
    for i in range(d):
        idx[i, i] = i
        for j in range(i):
            idx[i, j] = d + i * (i - 1) // 2 + j
    return idx.reshape(-1)


def _precision_cholesky_from_tril(raw, event_size, min_scale):
    """raw ``[..., D(D+1)/2]`` -> upper-triangular ``P = W.T`` ``[..., D, D]``.

    ``W`` (lower) holds ``1 / (softplus(raw_diag) + min_scale)`` on its diagonal
    and the raw strictly-lower entries below it; ``W = inv(L)`` with ``L`` the
    covariance Cholesky factor, whose diagonal is therefore
    ``softplus(raw_diag) + min_scale``.
    """
    d = event_size
    diag = tf.math.reciprocal(_positive_scale(raw[..., :d], min_scale))
    zeros = tf.zeros_like(raw[..., :1])
    vec = tf.concat([diag, raw[..., d:], zeros], axis=-1)
    w = tf.gather(vec, _tril_gather_indices(d), axis=-1)
    w = _unflatten_last(w, [d, d])
    return tf.linalg.matrix_transpose(w)


def split_params(params, num_components, event_size, covariance_type="diag",
                 min_scale=1e-3):
    """Flat parameters ``[..., params_size]`` -> :class:`MixtureParams`.

    Args:
        params: tensor whose last axis has ``params_size(num_components,
            event_size, covariance_type)`` entries laid out as in the module
            docstring. Any number of leading dimensions.
        num_components, event_size, covariance_type: the mixture's layout.
        min_scale: positive floor added to every softplus scale.

    Returns:
        ``MixtureParams(logits, locs, precisions_cholesky, covariance_type)``.
    """
    expected = params_size(num_components, event_size, covariance_type)
    params = tf.convert_to_tensor(params)
    if params.shape.rank is not None and params.shape.rank < 1:
        raise ValueError(
            f"`params` must have at least one axis; received shape {params.shape}."
        )
    last = params.shape[-1]
    if last is not None and last != expected:
        raise ValueError(
            f"`params` must have {expected} values on its last axis for "
            f"num_components={num_components}, event_size={event_size}, "
            f"covariance_type={covariance_type!r}; received params with shape "
            f"{tuple(params.shape)}. Use params_size(...) to size the layer "
            f"that produces them."
        )
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    k, d = num_components, event_size
    # One split (not three slices): fewer ops in the training step.
    logits, flat_locs, raw = tf.split(
        params, [k, k * d, expected - k - k * d], axis=-1
    )
    locs = _unflatten_last(flat_locs, [k, d])
    if covariance_type == "diag":
        prec_chol = tf.math.reciprocal(
            _positive_scale(_unflatten_last(raw, [k, d]), min_scale)
        )
    elif covariance_type == "spherical":
        prec_chol = tf.math.reciprocal(_positive_scale(raw, min_scale))
    elif covariance_type == "full":
        raw = _unflatten_last(raw, [k, d * (d + 1) // 2])
        prec_chol = _precision_cholesky_from_tril(raw, d, min_scale)
    else:  # tied
        prec_chol = _precision_cholesky_from_tril(raw, d, min_scale)
    return MixtureParams(logits, locs, prec_chol, covariance_type)


def check_min_scale(min_scale):
    """Raise a ValueError unless ``min_scale`` is a finite positive number."""
    return check_positive(
        min_scale, "min_scale",
        hint=" (the floor added to every softplus scale, e.g. 1e-3)",
    )


@dataclasses.dataclass(frozen=True)
class MixtureLayout:
    """The layout of a mixture in a flat tensor: what a head and its loss share.

    Validates its fields on construction (a ValueError names the argument and
    the value), and reads flat parameters with :meth:`split`.

    Example:

    >>> layout = MixtureLayout(num_components=3, event_size=2)
    >>> layout.params_size
    15
    """

    num_components: int
    event_size: int
    covariance_type: str = "diag"
    min_scale: float = 1e-3

    def __post_init__(self):
        check = {
            "num_components": _check_positive_int(self.num_components, "num_components"),
            "event_size": _check_positive_int(self.event_size, "event_size"),
            "covariance_type": check_covariance_type(self.covariance_type),
            "min_scale": check_min_scale(self.min_scale),
        }
        for name, value in check.items():
            object.__setattr__(self, name, value)

    @property
    def params_size(self):
        return params_size(self.num_components, self.event_size, self.covariance_type)

    def slices(self):
        return param_slices(self.num_components, self.event_size, self.covariance_type)

    def split(self, params, dtype=tf.float32):
        """:func:`split_params` of ``params`` cast to ``dtype`` (float32 by
        default, so probability math stays float32 under mixed precision)."""
        return split_params(
            tf.cast(params, dtype),
            self.num_components,
            self.event_size,
            self.covariance_type,
            self.min_scale,
        )

    def get_config(self):
        return dataclasses.asdict(self)


class MixtureLayoutMixin:
    """For classes holding a :class:`MixtureLayout` as ``self.layout`` (the
    mixture density head, its loss): its fields, read-only, and
    :meth:`mixture`."""

    num_components = property(lambda self: self.layout.num_components)
    event_size = property(lambda self: self.layout.event_size)
    covariance_type = property(lambda self: self.layout.covariance_type)
    min_scale = property(lambda self: self.layout.min_scale)

    def mixture(self, params):
        """The :class:`MixtureParams` held in flat ``params`` (float32)."""
        return self.layout.split(params)


# --------------------------------------------------------------------------
# what a mixture can do
# --------------------------------------------------------------------------
def log_prob(mixture, x):
    """log p(x) under the mixture: ``[...]`` for ``x`` of shape ``[..., D]``.

    Log-space throughout (log-softmax weights, logsumexp over components,
    log-determinants from Cholesky diagonals).
    """
    return gaussian.log_mixture_prob(
        x,
        mixture.log_weights,
        mixture.locs,
        mixture.precisions_cholesky,
        mixture.covariance_type,
    )


def distribution(mixture):
    """A ``tfd.MixtureSameFamily(tfd.Categorical, tfd.MultivariateNormal*)``.

    "diag" and "spherical" give ``MultivariateNormalDiag`` components, "full"
    and "tied" ``MultivariateNormalTriL`` (with the covariance Cholesky factor
    obtained from the precision factor by one triangular solve).
    """
    ctype = mixture.covariance_type
    if ctype in ("diag", "spherical"):
        scale = mixture.stddevs()
        components = tfd.MultivariateNormalDiag(loc=mixture.locs, scale_diag=scale)
    else:
        scale_tril = mixture.scale_tril()
        if ctype == "tied":
            scale_tril = tf.broadcast_to(
                scale_tril[..., None, :, :],
                tf.concat([tf.shape(mixture.locs), [mixture.event_size]], axis=0),
            )
        components = tfd.MultivariateNormalTriL(
            loc=mixture.locs, scale_tril=scale_tril
        )
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=mixture.logits),
        components_distribution=components,
    )


def mean(mixture):
    """Mixture mean ``sum_k w_k mu_k``: ``[..., D]``."""
    return tf.einsum("...k,...kd->...d", mixture.weights, mixture.locs)


def covariance(mixture):
    """Mixture covariance by the law of total variance: ``[..., D, D]``.

    ``sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T``, with the outer products
    taken around the mixture mean for accuracy.
    """
    w = mixture.weights
    centred = mixture.locs - mean(mixture)[..., None, :]
    between = tf.einsum("...k,...ki,...kj->...ij", w, centred, centred)
    cov = mixture.covariances()
    if mixture.covariance_type == "tied":
        within = cov
    else:
        within = tf.einsum("...k,...kij->...ij", w, cov)
    return within + between


def variance(mixture):
    """Diagonal of the mixture covariance: ``[..., D]``."""
    w = mixture.weights
    centred = mixture.locs - mean(mixture)[..., None, :]
    between = tf.einsum("...k,...kd->...d", w, tf.square(centred))
    comp_var = tf.square(mixture.stddevs())
    if mixture.covariance_type == "tied":
        within = comp_var
    else:
        within = tf.einsum("...k,...kd->...d", w, comp_var)
    return within + between


def _gather_component(tensor, index, batch_rank):
    return tf.gather(tensor, index, axis=batch_rank, batch_dims=batch_rank)


def greedy(mixture):
    """Greedy mode: the mean of the most probable component, ``[..., D]``."""
    index = tf.argmax(mixture.logits, axis=-1, output_type=tf.int32)
    batch_rank = mixture.logits.shape.rank - 1
    return _gather_component(mixture.locs, index, batch_rank)


def sample(mixture, seed, temperature=1.0, sigma_temperature=1.0):
    """One sample per batch element, vectorised and in-graph: ``[..., D]``.

    The component is drawn from ``softmax(logits / temperature)`` with the
    Gumbel-max trick, then the point from that component with its standard
    deviations multiplied by ``sigma_temperature`` (its covariance by
    ``sigma_temperature**2``). ``temperature=0`` picks the most probable
    component; with ``sigma_temperature=0`` as well the result equals
    :func:`greedy`.

    Args:
        mixture: a :class:`MixtureParams`.
        seed: a shape ``[2]`` integer tensor for TensorFlow's stateless random
            ops (the same seed gives the same samples).
        temperature: non-negative float or scalar tensor.
        sigma_temperature: non-negative float or scalar tensor.
    """
    logits = mixture.logits
    dtype = logits.dtype
    for name, value in (("temperature", temperature),
                        ("sigma_temperature", sigma_temperature)):
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0; received {name}={value}.")
        else:
            tf.debugging.assert_non_negative(value, message=f"`{name}` must be >= 0")
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    batch_rank = logits.shape.rank - 1
    if isinstance(temperature, (int, float)) and temperature == 0:
        index = tf.argmax(logits, axis=-1, output_type=tf.int32)
    else:
        temperature = tf.cast(temperature, dtype)
        # Gumbel-max: argmax(logits / T + g) ~ Categorical(softmax(logits / T)).
        # As T -> 0 the Gumbel noise vanishes against the scaled logits.
        u = tf.random.stateless_uniform(
            tf.shape(logits), seeds[0], minval=1e-20, maxval=1.0, dtype=dtype
        )
        gumbel = -tf.math.log(-tf.math.log(u))
        scaled = logits / tf.maximum(temperature, tf.cast(1e-30, dtype))
        index = tf.argmax(scaled + gumbel, axis=-1, output_type=tf.int32)
    loc = _gather_component(mixture.locs, index, batch_rank)
    if mixture.covariance_type == "tied":
        prec_chol = mixture.precisions_cholesky
    else:
        prec_chol = _gather_component(mixture.precisions_cholesky, index, batch_rank)
    z = tf.random.stateless_normal(tf.shape(loc), seeds[1], dtype=dtype)
    noise = gaussian.scale_noise(z, prec_chol, mixture.covariance_type)
    return loc + tf.cast(sigma_temperature, dtype) * noise


def stateless_seed(seed, seed_generator):
    """A shape-[2] int64 seed for TensorFlow's stateless random ops.

    ``seed``: None (draw from the layer's ``keras.random.SeedGenerator``, so
    each call differs and the generator's state is saved with the layer), an
    int, or a scalar/shape-[2] integer tensor.
    """
    if seed is None:
        return tf.cast(seed_generator.next(), tf.int64)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros_like(seed)])
    return seed
