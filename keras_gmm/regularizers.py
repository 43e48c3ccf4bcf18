"""GMMRegularizer: a learned Gaussian-mixture prior on weights (soft weight sharing).

:class:`GMMRegularizer` adds ``strength * sum_i -log p(w_i)`` to the loss,
where ``p`` is a Gaussian mixture over *scalars*: every entry of a kernel
(``kernel_regularizer=``), a bias (``bias_regularizer=``) or a layer's output
(``activity_regularizer=``) is one draw from the same mixture. One component
can be pinned at zero with a large fixed mixing weight; the others' means,
variances and weights are learned with the network. After training,
:func:`quantize` snaps every weight to the mean of its most responsible
component, so most weights become exactly zero and the rest share a few
values (Nowlan & Hinton 1992; Ullrich, Meeds & Welling 2017), and
:func:`compression_report` measures what that buys.

How the prior learns during ``model.fit``
-----------------------------------------
A Keras 3 regularizer is a callable whose variables the optimizer never sees,
so the mixture is not trained by gradient descent here. Instead
:class:`GMMPriorCallback` (``reg.callback()``) re-estimates it from the
current weights by EM, at the start of training, every ``update_every``
batches and at the end: an E-step (responsibilities, in log space) and a MAP
M-step whose Gamma hyperprior on the precisions
(:mod:`keras_gmm.ops.map_em`, as Ullrich et al.) keeps components from
collapsing, with the zero component's mean (0) and mixing weight fixed. With
the weights held still, each EM iteration cannot decrease the log posterior
of the prior, and the network then trains against the updated prior: a
coordinate ascent on the same objective the paper optimises jointly.

Where the prior lives
---------------------
The mixture's parameters are ``tf.Variable``\\ s owned by the regularizer and
*read at call time*, so a train step compiled once (``jit_compile=True``
included) sees every update the callback makes (a Python float would be baked
into the traced function and never change). :meth:`GMMRegularizer.get_config`
writes their current values (``means``, ``variances``, ``mixture_weights``),
and a layer's config holds its regularizer's config, so a ``.keras`` file
keeps the learned prior: ``keras.saving.load_model`` rebuilds the regularizer
from them. An instance shared by several layers is restored as one shared
instance: every instance has a random ``shared_id``, written in its config,
and within one ``load_model`` the configs with the same ``shared_id`` give
back the same instance (:meth:`GMMRegularizer.from_config`, through Keras'
object-sharing scope of that load; Keras' own ``shared_object_id`` marks only
some of the copies of a nested config, so it cannot be relied on). Outside a
load, ``from_config`` makes a new, independent prior. The regularizer is a ``tf.Module``,
so a layer tracks it like a sub-object and a SavedModel export that traces an
activity regularizer captures its variables.
"""

import math
import re
import uuid
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm.ops import em, em_driver, gaussian, map_em

try:  # Keras' object-sharing scope of one load (Keras >= 3.0)
    from keras.src.saving.serialization_lib import (
        get_shared_object as _get_shared_object,
    )
    from keras.src.saving.serialization_lib import (
        record_object_after_deserialization as _record_shared_object,
    )
except ImportError:  # pragma: no cover - depends on the Keras version
    _get_shared_object = _record_shared_object = None

__all__ = [
    "GMMRegularizer",
    "GMMPriorCallback",
    "regularized_variables",
    "quantize",
    "QuantizationWarning",
    "compression_report",
]

# Before the first fit, a prior without ``init_range`` spreads its free
# components evenly over this range (the callback replaces it at the start of
# training by the range of the weights).
_PLACEHOLDER_RANGE = (-1.0, 1.0)
# Attribute names of Keras layers' regularizers whose variable is not the
# name without "_regularizer".
_REGULARIZED_ATTRIBUTES = {
    "recurrent_regularizer": "recurrent_kernel",
    "depthwise_regularizer": "depthwise_kernel",
    "pointwise_regularizer": "pointwise_kernel",
}


# The one covariance type of a prior on scalars (D = 1).
_SCALAR = "diag"
_SHARED_ID = re.compile(r"^[0-9a-f]{32}$")


def _gamma_prior(value, name):
    alpha, beta = _validation.check_pair(value, name)
    alpha = _validation.check_number(alpha, f"{name}[0] (alpha)", low=1.0)
    beta = _validation.check_number(beta, f"{name}[1] (beta)", low=0.0, low_open=True)
    return (alpha, beta)


def _init_range(value):
    if value is None:
        return None
    low, high = _validation.check_pair(value, "init_range")
    if not low < high:
        raise ValueError(
            "`init_range` must be (low, high) with low < high; received "
            f"init_range={_validation.describe(value)}."
        )
    return (low, high)


def _check_shared_id(value):
    if not isinstance(value, str) or not _SHARED_ID.match(value):
        raise ValueError(
            "`shared_id` must be 32 lowercase hex digits (as get_config writes "
            f"it); received shared_id={_validation.describe(value)}."
        )
    return value


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMRegularizer(keras.regularizers.Regularizer, tf.Module):
    """A learned Gaussian-mixture prior on scalars: soft weight sharing.

    The penalty on a tensor ``x`` (a kernel, a bias or an activation) is::

        strength * sum_i -log p(x_i),
        p(x) = sum_k pi_k N(x | mu_k, sigma_k^2)

    over all entries ``x_i`` (the ``2 pi`` constant included), computed in
    float32 (also under ``mixed_float16``) in log space
    (:func:`keras_gmm.ops.gaussian.log_mixture_prob`, D = 1). With
    ``zero_component=True`` component 0 has ``mu_0 = 0`` and ``pi_0 =
    zero_weight`` fixed; its variance and the other components' means,
    variances and weights are learned from the values the regularizer is
    attached to, by :class:`GMMPriorCallback` (see the module docstring for
    why a callback and how it stays in sync with compiled train steps). The
    MAP M-step puts a Gamma prior on each precision ``1 / sigma_k^2``
    (:mod:`keras_gmm.ops.map_em`); the defaults are Ullrich et al.'s
    (``Gamma(250, 0.1)``, and ``Gamma(5000, 2)`` for the zero component),
    whose variance mode ``beta / (alpha - 1)`` is about ``0.02^2``: they suit
    weights of order 0.01 to 1 and tens of thousands of them. The prior acts
    as ``2 (alpha - 1)`` pseudo-weights at that variance, so it bounds how
    tight the clusters get, hence what :func:`quantize` costs; it is read by
    each EM update only, so it can be lowered during training (the zoo model
    ``soft_weight_sharing_digits`` anneals ``beta`` from 2 to 0.02, with
    ``alpha = 5000`` for every component).

    One instance may be given to several layers: one prior for the whole
    network, re-estimated from all their weights together (the callback finds
    every variable and layer output using it).

    Args:
        num_components: number of components ``K``, the zero component
            included (>= 1; >= 2 with ``zero_component``).
        strength: non-negative factor of the summed negative log-density. With
            a loss averaged over ``N`` training samples, Ullrich et al.'s
            ``tau`` (0.005) corresponds to ``strength = tau / N``.
        zero_component: pin component 0 at mean 0 with weight ``zero_weight``.
        zero_weight: the fixed mixing weight of the zero component, in (0, 1)
            (0.99 by default: most weights are expected to be pruned).
        init_range: ``(low, high)``: the free components' initial means are
            evenly spaced over it. ``None`` (default): over the range of the
            values of the first :meth:`fit` (the callback's, at the start of
            training); until then over ``(-1, 1)``.
        precision_prior: ``(alpha, beta)`` of the Gamma prior on the free
            components' precisions (``alpha >= 1``, ``beta > 0``).
        zero_precision_prior: ``(alpha, beta)`` for the zero component.
        means, variances, mixture_weights: the mixture's current parameters,
            ``K`` numbers each (written by :meth:`get_config`, so a saved
            model keeps its learned prior). ``None``: initialised as
            described under ``init_range``. With ``zero_component``,
            ``means[0]`` must be 0 and ``mixture_weights[0]`` is set to
            ``zero_weight`` (the others rescaled to sum to ``1 -
            zero_weight``).

    Call arguments:
        x: a tensor of any shape and float dtype; every entry is a scalar draw.

    Returns:
        A float32 scalar.

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> reg = keras_gmm.GMMRegularizer(num_components=4, strength=1e-4)
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", kernel_regularizer=reg),
    ...     keras.layers.Dense(1, kernel_regularizer=reg)])   # one shared prior
    >>> model.compile("adam", "mse")
    >>> x, y = np.random.rand(64, 8), np.random.rand(64, 1)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[reg.callback()])
    >>> report = keras_gmm.regularizers.quantize(model, reg)
    >>> report["n_distinct"] <= 4
    True

    Reference:
        Nowlan & Hinton, "Simplifying neural networks by soft weight-sharing",
        Neural Computation 4(4), 1992. Ullrich, Meeds & Welling, "Soft
        weight-sharing for neural network compression", ICLR 2017.
    """

    def __init__(
        self,
        num_components=16,
        strength=1e-4,
        zero_component=True,
        zero_weight=0.99,
        init_range=None,
        precision_prior=(250.0, 0.1),
        zero_precision_prior=(5000.0, 2.0),
        means=None,
        variances=None,
        mixture_weights=None,
    ):
        tf.Module.__init__(self, name="gmm_regularizer")
        self.zero_component = _validation.check_bool(zero_component, "zero_component")
        self.num_components = _validation.check_int(
            num_components, "num_components", minimum=2 if self.zero_component else 1,
            hint=(
                "with zero_component=True: the zero component plus at least "
                "one learned component; or pass zero_component=False"
                if self.zero_component else ""
            ),
        )
        self.strength = _validation.check_number(strength, "strength", low=0.0)
        self.zero_weight = _validation.check_number(
            zero_weight, "zero_weight", low=0.0, high=1.0, low_open=True, high_open=True
        )
        self.init_range = _init_range(init_range)
        self.precision_prior = precision_prior  # validated by the setters
        self.zero_precision_prior = zero_precision_prior
        given = [v is not None for v in (means, variances, mixture_weights)]
        if any(given) and not all(given):
            raise ValueError(
                "`means`, `variances` and `mixture_weights` must be given "
                "together (all three, as get_config writes them) or not at all; "
                f"received means={means!r}, variances={variances!r}, "
                f"mixture_weights={mixture_weights!r}."
            )
        self._fitted = all(given)
        if self._fitted:
            w, mu, var = self._check_parameters(mixture_weights, means, variances)
        else:
            w, mu, var = self._initial_parameters(self.init_range or _PLACEHOLDER_RANGE)
        self._weights = tf.Variable(w, trainable=False, name="mixture_weights")
        self._means = tf.Variable(mu, trainable=False, name="means")
        self._variances = tf.Variable(var, trainable=False, name="variances")
        # The identity of this prior in saved configs (see from_config).
        self._shared_id = uuid.uuid4().hex

    # ------------------------------------------------------------ parameters
    @property
    def fitted(self):
        """True once the prior was fitted (or given explicitly)."""
        return self._fitted

    @property
    def precision_prior(self):
        """``(alpha, beta)`` of the Gamma prior on the free components'
        precisions. Read by every :meth:`fit` (never by the compiled penalty),
        so it may be changed between fits, e.g. tightened on a schedule during
        training (``reg.precision_prior = (alpha, smaller_beta)``); the value
        at save time goes into the config."""
        return self._precision_prior

    @precision_prior.setter
    def precision_prior(self, value):
        self._precision_prior = _gamma_prior(value, "precision_prior")

    @property
    def zero_precision_prior(self):
        """``(alpha, beta)`` of the zero component's Gamma prior (settable, as
        :attr:`precision_prior`)."""
        return self._zero_precision_prior

    @zero_precision_prior.setter
    def zero_precision_prior(self, value):
        self._zero_precision_prior = _gamma_prior(value, "zero_precision_prior")

    @property
    def means(self):
        """``[K]`` NumPy float32 component means (``means[0] == 0`` with a
        zero component)."""
        return self._means.numpy()

    @property
    def variances(self):
        """``[K]`` NumPy float32 component variances."""
        return self._variances.numpy()

    @property
    def stddevs(self):
        """``[K]`` NumPy component standard deviations."""
        return np.sqrt(self.variances)

    @property
    def mixture_weights(self):
        """``[K]`` NumPy float32 mixing weights (sum to one)."""
        return self._weights.numpy()

    def _alpha_beta(self):
        k = self.num_components
        alpha = np.full(k, self.precision_prior[0], np.float32)
        beta = np.full(k, self.precision_prior[1], np.float32)
        if self.zero_component:
            alpha[0], beta[0] = self.zero_precision_prior
        return alpha, beta

    def _pin(self, weights):
        """Mixing weights with the zero component's fixed: ``[K]`` float64."""
        w = np.asarray(weights, np.float64)
        if self.zero_component:
            rest = w[1:] / w[1:].sum()
            w = np.concatenate([[self.zero_weight], (1.0 - self.zero_weight) * rest])
        return w / w.sum()

    def _initial_parameters(self, value_range, zero_variance=None):
        low, high = value_range
        free = self.num_components - int(self.zero_component)
        means = np.linspace(low, high, free) if free > 1 else np.array([(low + high) / 2])
        spacing = (high - low) / max(free, 1)
        variances = np.full(free, spacing**2)
        weights = np.full(free, 1.0 / free)
        if self.zero_component:
            means = np.concatenate([[0.0], means])
            zero_var = spacing**2 if zero_variance is None else zero_variance
            variances = np.concatenate([[zero_var], variances])
            weights = self._pin(np.concatenate([[1.0], weights]))
        return (weights.astype(np.float32), means.astype(np.float32),
                variances.astype(np.float32))

    def _check_parameters(self, weights, means, variances):
        k = self.num_components
        arrays = {}
        for name, value in (
            ("mixture_weights", weights), ("means", means), ("variances", variances)
        ):
            try:
                array = _validation.check_array(value, name, ndim=1, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`{name}` must be {k} finite numbers (num_components={k}); "
                    f"received {name}={_validation.describe(value)} ({error})"
                ) from None
            if array.shape != (k,):
                raise ValueError(
                    f"`{name}` must be {k} finite numbers (num_components={k}); "
                    f"received {name}={_validation.describe(value)}."
                )
            arrays[name] = array
        if np.any(arrays["variances"] <= 0):
            raise ValueError(
                f"`variances` must be > 0; received variances={variances!r}."
            )
        w = arrays["mixture_weights"]
        if np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-4:
            raise ValueError(
                "`mixture_weights` must be positive and sum to 1; received "
                f"mixture_weights={weights!r}."
            )
        if self.zero_component and arrays["means"][0] != 0.0:
            raise ValueError(
                "With zero_component=True, `means[0]` must be 0 (the pinned "
                f"component); received means={means!r}."
            )
        pinned = self._pin(w)
        if np.allclose(pinned, w, rtol=1e-6, atol=1e-7):
            pinned = w  # already pinned (a saved config): keep the exact numbers
        return (pinned.astype(np.float32), arrays["means"].astype(np.float32),
                arrays["variances"].astype(np.float32))

    def set_prior(self, means, variances, mixture_weights):
        """Set the mixture's parameters (``K`` numbers each), marking it fitted."""
        w, mu, var = self._check_parameters(mixture_weights, means, variances)
        self._assign(w, mu, var)

    def _assign(self, weights, means, variances):
        self._weights.assign(tf.cast(weights, tf.float32))
        self._means.assign(tf.cast(means, tf.float32))
        self._variances.assign(tf.cast(variances, tf.float32))
        self._fitted = True

    def _tensors(self):
        """``(log_weights [K], means [K, 1], precisions_cholesky [K, 1])``,
        read from the variables at call time."""
        return (
            tf.math.log(self._weights),
            self._means[:, None],
            tf.math.rsqrt(self._variances)[:, None],
        )

    # --------------------------------------------------------------- penalty
    def log_prob(self, x):
        """Elementwise ``log p(x)`` (float32, the shape of ``x``)."""
        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        log_w, means, prec_chol = self._tensors()
        flat = tf.reshape(x, [-1, 1])
        log_p = gaussian.log_mixture_prob(flat, log_w, means, prec_chol, _SCALAR)
        return tf.reshape(log_p, tf.shape(x))

    def __call__(self, x):
        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        log_w, means, prec_chol = self._tensors()
        log_p = gaussian.log_mixture_prob(
            tf.reshape(x, [-1, 1]), log_w, means, prec_chol, _SCALAR
        )
        return tf.constant(self.strength, tf.float32) * -tf.reduce_sum(log_p)

    # ------------------------------------------------------------- learning
    def fit(self, values, max_iter=100, tol=1e-7):
        """Re-estimate the mixture from ``values`` by MAP EM (in place).

        Every entry of ``values`` (an array, a tensor, or a list of them, of
        any shapes) is one scalar draw. The first fit of a prior without
        ``init_range`` or explicit parameters first spreads the free
        components evenly over the range of the values; later fits continue
        from the current parameters.

        Args:
            values: the weights (or activations) to fit.
            max_iter: the most EM iterations (>= 1).
            tol: stop when the mean log-likelihood per value changes by less.

        Returns:
            ``{"n_iter": int, "log_likelihood": float}``: iterations run and the
            mean ``log p(value)`` under the prior before the last M-step.
        """
        max_iter = _validation.check_positive_int(max_iter, "max_iter")
        tol = _validation.check_number(tol, "tol", low=0.0)
        x = _flatten_values(values)
        if x.shape[0] == 0:
            raise ValueError(
                "`values` must hold at least one number to fit the prior; "
                "received an empty input."
            )
        start = (self._weights, self._means, self._variances)
        if not self._fitted and self.init_range is None:
            # The first fit starts from the range of the values (assigned
            # only if the fit succeeds).
            xs = x.numpy().astype(np.float64)
            low, high = float(xs.min()), float(xs.max())
            if not low < high:
                low, high = low - 1.0, high + 1.0
            zero_var = float(np.mean(np.square(xs))) or (high - low) ** 2
            with np.errstate(over="ignore"):  # huge values: refused below
                start = self._initial_parameters((low, high), zero_var)
        alpha, beta = self._alpha_beta()
        fixed = np.zeros(self.num_components, bool)
        fixed[0] = self.zero_component
        weights, means, variances, n_iter, bound, failed = _MAP_EM(
            x[:, None], *(tf.convert_to_tensor(t) for t in start),
            tf.constant(alpha), tf.constant(beta), tf.constant(fixed),
            tf.constant(self.zero_weight if self.zero_component else -1.0, tf.float32),
            _iteration_capacity(max_iter), tf.constant(max_iter),
            tf.constant(tol, tf.float32),
        )
        if bool(failed) or not np.all(variances.numpy() > 0):
            raise ValueError(
                "Fitting the prior gave non-finite or non-positive variances "
                "(the prior is left as it was); check that the values are "
                "finite and of a magnitude float32 can square (below about "
                "1e18), or use a larger precision_prior beta."
            )
        self._assign(weights, means, variances)
        return {"n_iter": int(n_iter), "log_likelihood": float(bound)}

    def callback(self, update_every=10, max_iter=5, init_max_iter=100,
                 activity_data=None):
        """A :class:`GMMPriorCallback` that learns this prior during ``fit``."""
        return GMMPriorCallback(
            self, update_every=update_every, max_iter=max_iter,
            init_max_iter=init_max_iter, activity_data=activity_data,
        )

    # ----------------------------------------------------------- quantizing
    def component_of(self, values):
        """Index of the most responsible component of every entry (int32,
        the shape of ``values``): ``argmax_k log pi_k + log N(x | mu_k,
        sigma_k^2)``."""
        x = tf.cast(tf.convert_to_tensor(values), tf.float32)
        log_w, means, prec_chol = self._tensors()
        log_resp, _ = gaussian.log_responsibilities(
            tf.reshape(x, [-1, 1]), log_w, means, prec_chol, _SCALAR
        )
        return tf.reshape(tf.argmax(log_resp, axis=-1, output_type=tf.int32), tf.shape(x))

    def snap(self, values):
        """``values`` with every entry replaced by the mean of its most
        responsible component (the zero component gives exactly 0); same
        shape, float32."""
        return tf.gather(self._means, self.component_of(values))

    # -------------------------------------------------------- serialization
    def get_config(self):
        return {
            "num_components": self.num_components,
            "strength": self.strength,
            "zero_component": self.zero_component,
            "zero_weight": self.zero_weight,
            "init_range": None if self.init_range is None else list(self.init_range),
            "precision_prior": list(self.precision_prior),
            "zero_precision_prior": list(self.zero_precision_prior),
            "means": [float(v) for v in self.means] if self._fitted else None,
            "variances": [float(v) for v in self.variances] if self._fitted else None,
            "mixture_weights": (
                [float(v) for v in self.mixture_weights] if self._fitted else None
            ),
            "shared_id": self._shared_id,
        }

    @classmethod
    def from_config(cls, config):
        """The regularizer of ``config``; within one ``keras.saving.load_model``
        the configs that carry the same ``shared_id`` (the copies a model
        saved of one shared instance) give back one instance. Outside a load
        every call makes a new, independent prior (with a new id)."""
        config = dict(config)
        shared_id = config.pop("shared_id", None)
        instance = cls(**config)
        if shared_id is None or _get_shared_object is None:
            return instance  # saved before shared ids, or an old Keras
        key = f"keras_gmm.GMMRegularizer:{_check_shared_id(shared_id)}"
        existing = _get_shared_object(key)
        if isinstance(existing, cls):
            if existing._config_without_id() == instance._config_without_id():
                return existing
            return instance  # a different prior under the same id: kept apart
        _record_shared_object(instance, key)
        if _get_shared_object(key) is instance:  # inside a load: keep the identity
            instance._shared_id = shared_id
        return instance

    def _config_without_id(self):
        config = self.get_config()
        config.pop("shared_id")
        return config

    def __repr__(self):
        return (
            f"GMMRegularizer(num_components={self.num_components}, "
            f"strength={self.strength}, zero_component={self.zero_component}, "
            f"zero_weight={self.zero_weight}, fitted={self._fitted})"
        )


def _flatten_values(values):
    if isinstance(values, (list, tuple)):
        parts = [tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float32), [-1])
                 for v in values]
        x = tf.concat(parts, axis=0) if parts else tf.zeros([0], tf.float32)
    else:
        x = tf.reshape(tf.cast(tf.convert_to_tensor(values), tf.float32), [-1])
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError(
            "`values` must be finite to fit the prior; received NaN or inf "
            "(a diverged model?)."
        )
    return x


def _iteration_capacity(max_iter):
    """The power of two >= ``max_iter``: the size of the driver's bound
    history, so one trace serves every ``max_iter`` up to it."""
    return 1 << max(0, int(max_iter) - 1).bit_length()


def _map_em(x, weights, means, variances, alpha, beta, fixed_mean, zero_weight,
            capacity, max_iter, tol):
    """MAP EM iterations on scalars ``x [N, 1]`` through the one EM loop
    (:func:`keras_gmm.ops.em_driver.iterate`): each pass is an E-step and the
    MAP M-step of :mod:`keras_gmm.ops.map_em`.

    ``zero_weight < 0`` means no pinned component; otherwise component 0 keeps
    its mean (``fixed_mean``) and mixing weight ``zero_weight``. ``capacity``
    (a Python int >= ``max_iter``, a tensor) sizes the bound history.

    Returns:
        ``(weights, means, variances, n_iter, bound, failed)``: ``bound`` the
        mean log-likelihood of the last pass (before its M-step), ``failed``
        True when a pass gave non-finite parameters (the ones before it are
        returned).
    """
    n = tf.cast(tf.shape(x)[0], x.dtype)

    def mixing(nk):
        free = nk[1:] / tf.reduce_sum(nk[1:])
        pinned = tf.concat([zero_weight[None], (1.0 - zero_weight) * free], axis=0)
        return tf.where(zero_weight >= 0.0, pinned, nk / tf.reduce_sum(nk))

    def one_pass(params):
        w, mu, var = params
        prec_chol = tf.math.rsqrt(var)[:, None]
        stats, log_prob_sum = em.batch_statistics(
            x, w, mu[:, None], prec_chol, _SCALAR, fast=False
        )
        nk, new_mu, new_var = map_em.map_means_and_covariances(
            stats, mu[:, None], _SCALAR, alpha, beta, fixed_mean=fixed_mean
        )
        return log_prob_sum / n, (mixing(nk), new_mu[:, 0], new_var[:, 0])

    params = tuple(tf.convert_to_tensor(t) for t in (weights, means, variances))
    (w, mu, var), bounds, it, _, failed = em_driver.iterate(
        one_pass, params, capacity, tol, iter_limit=max_iter
    )
    bound = tf.gather(bounds, tf.maximum(it - 1, 0))
    return w, mu, var, it, bound, failed


# Compiled once per bound-history capacity and shared by every instance.
_MAP_EM = tf.function(_map_em, reduce_retracing=True)


# --------------------------------------------------------------------------
# finding what a regularizer is attached to
# --------------------------------------------------------------------------
def _all_layers(model):
    if hasattr(model, "_flatten_layers"):
        return list(model._flatten_layers(include_self=True, recursive=True))
    return list(getattr(model, "layers", []))


def regularized_variables(model, regularizer=None):
    """The variables of ``model`` whose regularizer is ``regularizer``.

    Args:
        model: a Keras model (or layer).
        regularizer: a :class:`GMMRegularizer`; ``None``: any GMMRegularizer.

    Returns:
        A list of ``(variable, regularizer)`` pairs, each variable once, in the
        model's weight order.
    """
    pairs, seen = [], set()
    for variable in model.weights:
        reg = getattr(variable, "regularizer", None)
        if not isinstance(reg, GMMRegularizer) or id(variable) in seen:
            continue
        if regularizer is None or reg is regularizer:
            seen.add(id(variable))
            pairs.append((variable, reg))
    return pairs


def _activity_layers(model, regularizer):
    return [
        layer for layer in _all_layers(model)
        if isinstance(getattr(layer, "activity_regularizer", None), GMMRegularizer)
        and (regularizer is None or layer.activity_regularizer is regularizer)
    ]


class GMMPriorCallback(keras.callbacks.Callback):
    """Learns :class:`GMMRegularizer` priors during ``model.fit`` by MAP EM.

    At the start of training (:meth:`GMMRegularizer.fit` with
    ``init_max_iter`` iterations: the first time it also places the means over
    the range of the weights), every ``update_every`` training batches
    (``max_iter`` iterations from the current prior) and at the end of
    training, each prior is re-estimated from *all* the values it regularizes:
    every variable whose regularizer it is (kernels, biases, ... of any layer,
    a shared instance pooling them) and, when ``activity_data`` is given, the
    outputs of the layers that use it as ``activity_regularizer`` on those
    inputs. The new parameters are assigned to the regularizer's variables,
    which the compiled train step reads at every step.

    Args:
        regularizer: the :class:`GMMRegularizer` to learn; ``None``: every
            GMMRegularizer used in the model.
        update_every: re-estimate every this many training batches (>= 1).
        max_iter: EM iterations per update (>= 1).
        init_max_iter: EM iterations at the start of training (>= 1).
        activity_data: optional model inputs (a batch or a few) on which the
            activations of layers with a GMMRegularizer as
            ``activity_regularizer`` are computed for the updates; without it
            those priors learn from weights only, and a prior used *only* as
            an activity regularizer raises at the start of training.

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> reg = keras_gmm.GMMRegularizer(num_components=3, strength=1e-3)
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(8, kernel_regularizer=reg)])
    >>> model.compile("adam", "mse")
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 8)), verbose=0,
    ...               callbacks=[keras_gmm.regularizers.GMMPriorCallback(reg)])
    >>> reg.fitted
    True
    """

    def __init__(self, regularizer=None, update_every=10, max_iter=5,
                 init_max_iter=100, activity_data=None):
        super().__init__()
        if regularizer is not None and not isinstance(regularizer, GMMRegularizer):
            raise ValueError(
                "`regularizer` must be a keras_gmm.GMMRegularizer or None (every "
                f"GMMRegularizer in the model); received regularizer={regularizer!r}."
            )
        self.regularizer = regularizer
        self.update_every = _validation.check_positive_int(update_every, "update_every")
        self.max_iter = _validation.check_positive_int(max_iter, "max_iter")
        self.init_max_iter = _validation.check_positive_int(
            init_max_iter, "init_max_iter")
        self.activity_data = activity_data
        self._groups = None
        self._probe = None
        self._step = 0
        self.history = []

    def _collect(self):
        model = self.model
        groups = {}
        for variable, reg in regularized_variables(model, self.regularizer):
            groups.setdefault(id(reg), (reg, [], []))[1].append(variable)
        layers = _activity_layers(model, self.regularizer)
        if layers and self.activity_data is not None:
            for layer in layers:
                reg = layer.activity_regularizer
                groups.setdefault(id(reg), (reg, [], []))[2].append(layer)
        if not groups:
            where = (
                "as an activity_regularizer only: pass activity_data=... (a "
                "batch of model inputs) so the callback can compute the "
                "activations it learns from"
                if layers else "in the model's layers"
            )
            target = "the given GMMRegularizer" if self.regularizer else "a GMMRegularizer"
            raise ValueError(
                f"GMMPriorCallback found no values to learn {target} from: it "
                f"is used {where}."
            )
        self._groups = list(groups.values())
        probe_layers = [layer for _, _, ls in self._groups for layer in ls]
        if probe_layers:
            try:
                inputs = model.inputs
                self._probe = keras.Model(
                    inputs[0] if len(inputs) == 1 else inputs,
                    [layer.output for layer in probe_layers],
                )
            except (AttributeError, ValueError) as error:
                raise ValueError(
                    "activity_data needs a Functional or Sequential model whose "
                    "layers' outputs can be read (layer.output); received "
                    f"model {model.name!r}."
                ) from error

    def _update(self, max_iter):
        activations = {}
        if self._probe is not None:
            outputs = self._probe(self.activity_data, training=False)
            if not isinstance(outputs, (list, tuple)):
                outputs = [outputs]
            probe_layers = [layer for _, _, ls in self._groups for layer in ls]
            activations = {id(layer): out for layer, out in zip(probe_layers, outputs)}
        for reg, variables, layers in self._groups:
            values = [v.value for v in variables]
            values += [activations[id(layer)] for layer in layers]
            result = reg.fit(values, max_iter=max_iter)
            self.history.append({"step": self._step, **result})

    def on_train_begin(self, logs=None):
        self._collect()
        self._update(self.init_max_iter)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.update_every == 0:
            self._update(self.max_iter)

    def on_train_end(self, logs=None):
        self._update(self.max_iter)


# --------------------------------------------------------------------------
# quantization and compression
# --------------------------------------------------------------------------
#: Default of :func:`quantize`'s ``max_zeroed_fraction``.
MAX_ZEROED_FRACTION = 0.99
_QUANTIZE_CHECKS = ("warn", "raise", "ignore")


class QuantizationWarning(UserWarning):
    """:func:`quantize` set a whole layer's weights to zero, or more of the
    non-zero weights than ``max_zeroed_fraction`` allows."""


def _layer_path(variable):
    """The path of the layer owning ``variable`` (Keras 3: ``.../layer/name``)."""
    path = str(getattr(variable, "path", None) or getattr(variable, "name", ""))
    return path.rsplit("/", 1)[0] if "/" in path else path


def quantize(model, regularizer=None, max_zeroed_fraction=MAX_ZEROED_FRACTION,
             check="warn"):
    """Snap every weight regularized by a GMMRegularizer to a component mean.

    Each variable whose regularizer is ``regularizer`` (``None``: any
    GMMRegularizer) is replaced in place by :meth:`GMMRegularizer.snap`: the
    mean of each entry's most responsible component, exactly 0 for the zero
    component. Accuracy after quantization is the caller's to measure.

    Before any weight changes, the snapped values are checked for two signs
    of a prior that was not ready (typically fitted for too few epochs: the
    weights have not yet moved into its non-zero components, so the zero
    component, with its mixing weight of 0.99, claims nearly all of them):

    - a *zeroed layer*: a layer all of whose regularized weights (its
      kernel, and its bias if regularized) would be 0 although some were not;
      its output then no longer depends on its input;
    - more than ``max_zeroed_fraction`` of the non-zero weights set to 0.

    Soft weight sharing is meant to zero most weights: the zoo model
    ``soft_weight_sharing_digits`` zeroes 92-94 % of them, Ullrich et al. 96 %
    (LeNet-300-100) and 99.5 % (LeNet-5); the default 0.99 lets such results
    through and catches a prior that takes (almost) everything. A zeroed bias
    alone, next to a non-zero kernel, is normal and not reported.

    Args:
        model: a Keras model (or layer).
        regularizer: the :class:`GMMRegularizer` whose variables to quantize;
            ``None``: every GMMRegularizer's.
        max_zeroed_fraction: the largest fraction (in [0, 1]) of the non-zero
            weights that quantization may set to 0 without a complaint; 1.0
            checks zeroed layers only.
        check: what to do when a check fails: ``"warn"`` (default: quantize,
            then a :class:`QuantizationWarning` saying what was lost and the
            fix), ``"raise"`` (a ValueError; no weight is changed) or
            ``"ignore"``.

    Returns:
        A dict: ``n_weights``, ``n_nonzero``, ``nonzero_fraction``,
        ``n_distinct`` (distinct values over all quantized weights),
        ``n_nonzero_before``, ``zeroed_fraction`` (of the non-zero weights
        before, the fraction set to 0), ``zeroed_layers`` (the paths of the
        zeroed layers) and ``variables``: one ``{"name", "shape",
        "n_weights", "n_nonzero", "n_nonzero_before", "n_distinct"}`` per
        variable.

    Raises:
        ValueError: the model has no variable with such a regularizer; a bad
            argument; with ``check="raise"``, a failed check.
    """
    max_zeroed_fraction = _validation.check_number(
        max_zeroed_fraction, "max_zeroed_fraction", low=0.0, high=1.0)
    check = _validation.check_one_of(check, "check", _QUANTIZE_CHECKS)
    pairs = regularized_variables(model, regularizer)
    if not pairs:
        raise ValueError(
            "quantize found no variable regularized by "
            + ("the given GMMRegularizer" if regularizer is not None
               else "a GMMRegularizer")
            + f" in model {getattr(model, 'name', model)!r}; pass the "
            "regularizer used as kernel_regularizer/bias_regularizer."
        )
    snapped, rows, layers, zeroed = [], [], {}, 0
    for variable, reg in pairs:
        before = np.asarray(variable.numpy())
        after = np.asarray(
            tf.cast(reg.snap(variable.value), variable.dtype).numpy()
        ).reshape(before.shape)
        snapped.append(after)
        zeroed += int(np.count_nonzero((before != 0) & (after == 0)))
        row = {
            "name": variable.path,
            "shape": list(after.shape),
            "n_weights": int(after.size),
            "n_nonzero": int(np.count_nonzero(after)),
            "n_nonzero_before": int(np.count_nonzero(before)),
            "n_distinct": int(np.unique(after).size),
        }
        rows.append(row)
        counts = layers.setdefault(_layer_path(variable), [0, 0])
        counts[0] += row["n_nonzero_before"]
        counts[1] += row["n_nonzero"]
    flat = np.concatenate([a.ravel() for a in snapped])
    n_nonzero = int(np.count_nonzero(flat))
    n_before = sum(row["n_nonzero_before"] for row in rows)
    zeroed_fraction = zeroed / n_before if n_before else 0.0
    zeroed_layers = [path for path, (b, a) in layers.items() if b and not a]
    problems = []
    if zeroed_layers:
        problems.append("every regularized weight of layer(s) "
                        + ", ".join(repr(path) for path in zeroed_layers))
    if zeroed_fraction > max_zeroed_fraction:
        problems.append(
            f"{zeroed_fraction:.1%} of the {n_before} non-zero weights (more "
            f"than max_zeroed_fraction={max_zeroed_fraction:g})"
        )
    if problems and check != "ignore":
        message = (
            "quantize " + ("would set " if check == "raise" else "set ")
            + " and ".join(problems) + " to 0"
            ": the prior's zero component is the most responsible one for "
            "(nearly) every weight, as when the prior was learned before the "
            "weights settled into its other components (too few epochs with "
            "reg.callback()). Train longer under the prior before quantizing "
            "(or lower zero_weight) and compare the accuracy before and after"
            + ("; no weight was changed. Pass check='ignore' (or a larger "
               "max_zeroed_fraction) to quantize anyway."
               if check == "raise" else
               "; pass check='ignore' (or a larger max_zeroed_fraction) if "
               "this is intended.")
        )
        if check == "raise":
            raise ValueError(message)
    for (variable, _), after in zip(pairs, snapped):
        variable.assign(after)
    if problems and check == "warn":
        warnings.warn(message, QuantizationWarning, stacklevel=2)
    return {
        "n_weights": int(flat.size),
        "n_nonzero": n_nonzero,
        "nonzero_fraction": n_nonzero / flat.size,
        "n_distinct": int(np.unique(flat).size),
        "n_nonzero_before": n_before,
        "zeroed_fraction": zeroed_fraction,
        "zeroed_layers": zeroed_layers,
        "variables": rows,
    }


def _bits_for(n_symbols):
    return max(1, math.ceil(math.log2(n_symbols))) if n_symbols > 1 else 1


def _variable_bits(flat, position_bits):
    """``{format: bits}`` of one flat array in the three simple formats."""
    n = flat.size
    distinct = np.unique(flat)
    codebook = 32 * distinct.size
    dense = n * _bits_for(distinct.size) + codebook
    nonzero = np.flatnonzero(flat)
    # Relative (gap) indices of `position_bits` bits, as Han et al. 2016: a
    # gap of more than 2^b - 1 zeros inserts filler entries (stored zeros).
    gaps = np.diff(np.concatenate([[-1], nonzero])) - 1
    fillers = int(np.sum(gaps // (1 << position_bits)))  # trailing zeros: free
    entries = nonzero.size + fillers
    sparse_symbols = distinct.size + (0 if 0.0 in distinct else 1)
    sparse = entries * (position_bits + _bits_for(sparse_symbols)) + 32 * sparse_symbols
    return {"float32": 32 * n, "index": dense, "sparse_index": sparse}


def compression_report(model, variables=None, position_bits=5):
    """Storage of a model's weights under a simple index coding.

    Each variable is stored in the cheapest of three formats:

    - ``float32``: 32 bits per weight;
    - ``index``: a codebook of its distinct values (32 bits each) and
      ``ceil(log2(n_distinct))`` bits per weight;
    - ``sparse_index``: only the non-zero weights, each as a codebook index
      plus a ``position_bits``-bit gap to the previous non-zero (a longer run
      of zeros costs filler entries, as in Han et al.'s relative indexing).

    Args:
        model: a Keras model.
        variables: the variables to count; ``None``: ``model.trainable_weights``
            (kernels and biases alike).
        position_bits: bits of the relative position in ``sparse_index``
            (5, as Han et al. for fully connected layers).

    Returns:
        A dict: ``n_weights``, ``n_nonzero``, ``nonzero_fraction``,
        ``n_distinct`` (over all the weights), ``bits`` (total),
        ``bits_per_weight``, ``compression_ratio`` (``32 * n_weights /
        bits``, against float32) and ``variables``: one ``{"name",
        "n_weights", "n_nonzero", "n_distinct", "format", "bits"}`` per
        variable.

    Reference:
        Han, Mao & Dally, "Deep compression", ICLR 2016 (the sparse format).
    """
    position_bits = _validation.check_positive_int(position_bits, "position_bits")
    if variables is None:
        variables = model.trainable_weights
    variables = list(variables)
    if not variables:
        raise ValueError(
            f"compression_report found no weights to count in model "
            f"{getattr(model, 'name', model)!r}; build the model first."
        )
    rows, flats, total_bits = [], [], 0
    for variable in variables:
        flat = np.asarray(keras.ops.convert_to_numpy(variable), np.float32).ravel()
        bits = _variable_bits(flat, position_bits)
        fmt = min(bits, key=bits.get)
        total_bits += bits[fmt]
        flats.append(flat)
        rows.append({
            "name": getattr(variable, "path", getattr(variable, "name", "")),
            "n_weights": int(flat.size),
            "n_nonzero": int(np.count_nonzero(flat)),
            "n_distinct": int(np.unique(flat).size),
            "format": fmt,
            "bits": int(bits[fmt]),
        })
    flat = np.concatenate(flats)
    n_nonzero = int(np.count_nonzero(flat))
    return {
        "n_weights": int(flat.size),
        "n_nonzero": n_nonzero,
        "nonzero_fraction": n_nonzero / flat.size,
        "n_distinct": int(np.unique(flat).size),
        "bits": int(total_bits),
        "bits_per_weight": total_bits / flat.size,
        "compression_ratio": 32.0 * flat.size / total_bits,
        "position_bits": position_bits,
        "variables": rows,
    }
