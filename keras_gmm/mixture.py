"""How a Gaussian mixture is laid out in a flat tensor, and what it can do.

A mixture of ``K`` Gaussians over a ``D``-dimensional event is stored in the
last axis of a flat tensor, in this order (TFP's ``params_size``/``new`` idea,
as plain functions)::

    [ logits (K) | means (K*D, component-major) | scale parameters ]

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
(``precision = P @ P.T``, see :mod:`keras_gmm.ops.covariance`): for "full" that
is ``P = W.T``, so the log-density needs one product and no solve.

Every layer reads its mixture as a :class:`MixtureParams` (a head from its
flat output, a fitted layer from its weights), so one sampler (:func:`sample`)
and one TFP builder (:func:`distribution`) serve all of them.
"""

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_gmm import _validation
from keras_gmm.ops import covariance as covariance_lib
from keras_gmm.ops import gaussian
from keras_gmm.ops.covariance import COVARIANCE_TYPES

tfd = tfp.distributions

__all__ = [
    "COVARIANCE_TYPES",
    "MixtureLayout",
    "MixtureLayoutMixin",
    "MixtureParams",
    "check_min_scale",
    "check_temperature",
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
        means: ``[..., K, D]`` component means.
        precisions_cholesky: precision Cholesky factors, shaped per covariance
            type as described in :mod:`keras_gmm.ops.covariance`.
        covariance_type: "full", "tied", "diag" or "spherical".
    """

    logits: tf.Tensor
    means: tf.Tensor
    precisions_cholesky: tf.Tensor
    covariance_type: str

    @property
    def locs(self):
        """Deprecated name of :attr:`means`."""
        warnings.warn(
            "MixtureParams.locs is deprecated; use MixtureParams.means.",
            DeprecationWarning, stacklevel=2,
        )
        return self.means

    @property
    def covariance(self):
        """The :class:`keras_gmm.ops.covariance.CovarianceType` object."""
        return covariance_lib.get(self.covariance_type)

    @property
    def num_components(self):
        return self.means.shape[-2]

    @property
    def event_size(self):
        return self.means.shape[-1]

    @property
    def log_weights(self):
        return tf.nn.log_softmax(self.logits, axis=-1)

    @property
    def weights(self):
        return tf.nn.softmax(self.logits, axis=-1)

    def stddevs(self):
        """Marginal standard deviations, ``[..., K, D]`` (``[..., D]`` tied)."""
        return self.covariance.stddevs(self.precisions_cholesky, self.event_size)

    def covariances(self):
        """Component covariances, ``[..., K, D, D]`` (``[..., D, D]`` tied)."""
        return self.covariance.covariance_matrices(
            self.precisions_cholesky, self.event_size
        )

    def scale_tril(self):
        """Lower Cholesky factors of the component covariances."""
        return self.covariance.covariance_cholesky(
            self.precisions_cholesky, self.event_size
        )


# --------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------
def params_size(num_components, event_size, covariance_type="diag"):
    """Number of values in the flat parameter tensor of a mixture.

    This is how many units the layer before a mixture must output.

    Example:

    >>> params_size(5, 1, "diag")
    15
    >>> params_size(3, 2, "full")  # 3 logits + 6 locs + 3 * 3 tril entries
    18
    """
    num_components = _validation.check_positive_int(num_components, "num_components")
    event_size = _validation.check_positive_int(event_size, "event_size")
    cov = covariance_lib.get(covariance_type)
    return (
        num_components
        + num_components * event_size
        + cov.num_scale_params(num_components, event_size)
    )


def param_slices(num_components, event_size, covariance_type="diag"):
    """``{"logits": slice, "means": slice, "scale": slice}`` into the flat axis."""
    size = params_size(num_components, event_size, covariance_type)
    k, kd = num_components, num_components * event_size
    return {
        "logits": slice(0, k),
        "means": slice(k, k + kd),
        "scale": slice(k + kd, size),
    }


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
        ``MixtureParams(logits, means, precisions_cholesky, covariance_type)``.
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
    logits, flat_means, raw = tf.split(
        params, [k, k * d, expected - k - k * d], axis=-1
    )
    means = covariance_lib._unflatten_last(flat_means, [k, d])
    prec_chol = covariance_lib.get(covariance_type).precisions_cholesky_from_raw(
        raw, k, d, min_scale
    )
    return MixtureParams(logits, means, prec_chol, covariance_type)


def check_min_scale(min_scale):
    """Raise a ValueError unless ``min_scale`` is a finite positive number."""
    return _validation.check_positive(
        min_scale, "min_scale",
        hint="the floor added to every softplus scale, e.g. 1e-3",
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
            "num_components": _validation.check_positive_int(
                self.num_components, "num_components"),
            "event_size": _validation.check_positive_int(self.event_size, "event_size"),
            "covariance_type": covariance_lib.check(self.covariance_type),
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
        mixture.means,
        mixture.precisions_cholesky,
        mixture.covariance_type,
    )


def distribution(mixture):
    """A ``tfd.MixtureSameFamily(tfd.Categorical, tfd.MultivariateNormal*)``.

    Matrix factors ("full", "tied") give ``MultivariateNormalTriL`` components
    (the covariance Cholesky factor obtained from the precision factor by one
    triangular solve), the others ``MultivariateNormalDiag``.
    """
    cov = mixture.covariance
    if cov.matrix:
        scale_tril = cov.per_component(
            mixture.scale_tril(), mixture.num_components, event_rank=2
        )
        components = tfd.MultivariateNormalTriL(
            loc=mixture.means, scale_tril=scale_tril
        )
    else:
        components = tfd.MultivariateNormalDiag(
            loc=mixture.means, scale_diag=mixture.stddevs()
        )
    return tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=mixture.logits),
        components_distribution=components,
    )


def mean(mixture):
    """Mixture mean ``sum_k w_k mu_k``: ``[..., D]``."""
    return tf.einsum("...k,...kd->...d", mixture.weights, mixture.means)


def covariance(mixture):
    """Mixture covariance by the law of total variance: ``[..., D, D]``.

    ``sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T``, with the outer products
    taken around the mixture mean for accuracy.
    """
    w = mixture.weights
    centred = mixture.means - mean(mixture)[..., None, :]
    between = tf.einsum("...k,...ki,...kj->...ij", w, centred, centred)
    within = mixture.covariance.within(w, mixture.covariances(), event_rank=2)
    return within + between


def variance(mixture):
    """Diagonal of the mixture covariance: ``[..., D]``."""
    w = mixture.weights
    centred = mixture.means - mean(mixture)[..., None, :]
    between = tf.einsum("...k,...kd->...d", w, tf.square(centred))
    within = mixture.covariance.within(w, tf.square(mixture.stddevs()), event_rank=1)
    return within + between


def greedy(mixture):
    """Greedy mode: the mean of the most probable component, ``[..., D]``."""
    index = tf.argmax(mixture.logits, axis=-1, output_type=tf.int32)
    batch_rank = mixture.logits.shape.rank - 1
    return covariance_lib.gather_component(mixture.means, index, batch_rank)


def check_temperature(value, name="temperature"):
    """A temperature: a finite number >= 0 (a Python float), or a tensor
    checked in-graph (:func:`keras_gmm._validation.assert_number`, the same
    message; the returned tensor depends on the check)."""
    if tf.is_tensor(value):
        return _validation.assert_number(value, name, low=0)
    return _validation.check_number(value, name, low=0)


def _choose_components(logits, seed, temperature, n):
    """Component indices by Gumbel-max from ``softmax(logits / temperature)``
    (``temperature == 0``: the most probable component)."""
    if n is not None:
        logits = tf.broadcast_to(logits, tf.concat([[n], tf.shape(logits)], 0))
    if isinstance(temperature, float) and temperature == 0:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    dtype = logits.dtype
    temperature = tf.cast(temperature, dtype)
    # argmax(logits / T + g) ~ Categorical(softmax(logits / T)); as T -> 0 the
    # Gumbel noise vanishes against the scaled logits.
    u = tf.random.stateless_uniform(
        tf.shape(logits), seed, minval=1e-20, maxval=1.0, dtype=dtype
    )
    gumbel = -tf.math.log(-tf.math.log(u))
    scaled = logits / tf.maximum(temperature, tf.cast(1e-30, dtype))
    return tf.argmax(scaled + gumbel, axis=-1, output_type=tf.int32)


def sample(mixture, seed, temperature=1.0, sigma_temperature=1.0, n=None,
           components=None, return_components=False):
    """Samples of a mixture, vectorised and in-graph: the one sampler.

    Two forms:

    - ``n=None``: one sample per batch element of a (batched) mixture, e.g. a
      mixture density head's output: ``[..., D]``;
    - ``n`` given: ``n`` samples of an un-batched mixture (a fitted or prior
      mixture, ``logits [K]``): ``[n, D]``.

    The component is drawn from ``softmax(logits / temperature)`` with the
    Gumbel-max trick (or given as ``components``), then the point from that
    component with its standard deviations multiplied by
    ``sigma_temperature`` (its covariance by ``sigma_temperature**2``). The
    draw is reparameterized per component (``mean + L z``): gradients reach
    the means and scales, not the discrete choice. ``temperature=0`` picks
    the most probable component; with ``sigma_temperature=0`` as well the
    result equals :func:`greedy`.

    Args:
        mixture: a :class:`MixtureParams`.
        seed: a shape ``[2]`` integer tensor for TensorFlow's stateless random
            ops (the same seed gives the same samples), see
            :func:`stateless_seed`.
        temperature: finite number >= 0, or a scalar tensor.
        sigma_temperature: finite number >= 0, or a scalar tensor.
        n: the number of samples of an un-batched mixture (int or int scalar
            tensor), or None.
        components: None, or int32 component indices, one per sample
            (shape ``[n]`` or the batch shape).
        return_components: also return the component indices.

    Returns:
        ``x`` (and ``components`` when ``return_components``).

    Example:

    >>> import tensorflow as tf
    >>> m = MixtureParams(tf.zeros([2]), tf.constant([[0.0], [10.0]]),
    ...                   tf.ones([2, 1]), "diag")
    >>> x, c = sample(m, tf.constant([1, 2]), n=5, return_components=True)
    >>> x.shape, c.shape
    (TensorShape([5, 1]), TensorShape([5]))
    """
    temperature = check_temperature(temperature, "temperature")
    sigma_temperature = check_temperature(sigma_temperature, "sigma_temperature")
    logits = mixture.logits
    dtype = logits.dtype
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    if n is not None and not tf.is_tensor(n):
        n = _validation.check_int(n, "n", minimum=0)
    if components is None:
        components = _choose_components(logits, seeds[0], temperature, n)
    else:
        components = tf.cast(components, tf.int32)
    batch_rank = 0 if n is not None else logits.shape.rank - 1
    cov = mixture.covariance
    loc = covariance_lib.gather_component(mixture.means, components, batch_rank)
    factor = cov.select(mixture.precisions_cholesky, components, batch_rank)
    z = tf.random.stateless_normal(tf.shape(loc), seeds[1], dtype=dtype)
    x = loc + tf.cast(sigma_temperature, dtype) * cov.scale_noise(z, factor)
    return (x, components) if return_components else x


def stateless_seed(seed, seed_generator):
    """A shape-[2] int64 seed for TensorFlow's stateless random ops.

    ``seed``: None (draw from the layer's ``keras.random.SeedGenerator``, so
    each call differs and the generator's state is saved with the layer), an
    int in ``[0, 2**63 - 1]``, or a scalar/shape-[2] integer tensor.
    """
    if seed is None:
        return tf.cast(seed_generator.next(), tf.int64)
    if not tf.is_tensor(seed):
        return tf.constant([_validation.check_seed(seed, allow_none=False), 0],
                           dtype=tf.int64)
    if not seed.dtype.is_integer:
        raise ValueError(
            f"`seed` must be an integer tensor; received a tensor of dtype "
            f"{seed.dtype.name}."
        )
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros_like(seed)])
    return seed
