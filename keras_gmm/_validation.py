"""The one place public arguments and arrays are checked.

Every public constructor, method and command of keras_gmm checks what it is
given here, once, at the boundary, before any graph runs; the ops below the
boundary trust their callers (as scikit-learn's private functions do). Each
check raises a ``ValueError`` (a ``TypeError`` where the kind of object is
wrong, e.g. a sparse matrix) whose message names the argument, the value
received and, where there is one, the fix.

Example:

>>> check_int(3, "num_components", minimum=1)
3
>>> check_number(0.5, "momentum", low=0.0, high=1.0, high_open=True)
0.5
>>> check_one_of("diag", "covariance_type", ("full", "diag"))
'diag'
>>> check_int(0, "num_components", minimum=1)
Traceback (most recent call last):
...
ValueError: `num_components` must be an integer >= 1; received num_components=0.
"""

import math
import numbers

import numpy as np

__all__ = [
    "number_rule",
    "check_number",
    "assert_number",
    "check_positive",
    "check_int",
    "check_positive_int",
    "check_one_of",
    "check_bool",
    "check_seed",
    "check_pair",
    "check_array",
    "check_permutation",
    "check_rows",
    "describe",
]

#: Largest seed accepted (TensorFlow's stateless ops take int64 seeds).
MAX_SEED = 2**63 - 1


def describe(value, limit=80):
    """``repr(value)`` cut to ``limit`` characters (for error messages)."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _hint(hint):
    return f" ({hint})" if hint else ""


def _is_real_number(value):
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Real)
    )


def number_rule(name, *, low=None, high=None, low_open=False, high_open=False,
                hint=""):
    """The rule :func:`check_number` states, e.g. "`temperature` must be a
    finite number >= 0" (shared with the in-graph :func:`assert_number`)."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high}")
    what = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    return f"`{name}` must be {what}{_hint(hint)}"


def check_number(value, name, *, low=None, high=None, low_open=False,
                 high_open=False, hint=""):
    """``value`` as a Python float if it is a finite real number within the
    bounds (``low``/``high``, closed unless ``low_open``/``high_open``), else a
    ValueError naming the argument and the value."""
    ok = _is_real_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        rule = number_rule(name, low=low, high=high, low_open=low_open,
                           high_open=high_open, hint=hint)
        raise ValueError(f"{rule}; received {name}={describe(value)}.")
    return float(value)


def assert_number(value, name, *, low=None, high=None, low_open=False,
                  high_open=False):
    """In-graph twin of :func:`check_number` for a tensor (exported
    signatures, ``jit_compile``): returns ``value`` after a
    ``tf.debugging.Assert`` that every entry is finite and within the bounds;
    a failure is an ``InvalidArgumentError`` with the eager message, e.g.
    "`temperature` must be a finite number >= 0; received temperature=" and
    the value. (XLA drops assertions: compiled callers check eagerly.)"""
    import tensorflow as tf  # only here: the CLI's checks stay TensorFlow-free

    value = tf.convert_to_tensor(value)
    if not value.dtype.is_floating:
        value = tf.cast(value, tf.float32)
    ok = tf.reduce_all(tf.math.is_finite(value))
    if low is not None:
        low_t = tf.cast(low, value.dtype)
        ok &= tf.reduce_all(value > low_t if low_open else value >= low_t)
    if high is not None:
        high_t = tf.cast(high, value.dtype)
        ok &= tf.reduce_all(value < high_t if high_open else value <= high_t)
    rule = number_rule(name, low=low, high=high, low_open=low_open,
                       high_open=high_open)
    check = tf.debugging.Assert(ok, [f"{rule}; received {name}=", value])
    with tf.control_dependencies([check]):
        return tf.identity(value)


def check_positive(value, name, hint=""):
    """``value`` as a float if it is a finite number > 0."""
    return check_number(value, name, low=0.0, low_open=True, hint=hint)


def check_int(value, name, *, minimum=None, maximum=None, hint=""):
    """``value`` as a Python int if it is an integer (not a bool, not a float:
    ``2.0`` is not a count) within ``[minimum, maximum]``."""
    ok = (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Integral)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    )
    if not ok:
        if minimum is not None and maximum is not None:
            what = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            what = f"an integer >= {minimum}"
        elif maximum is not None:
            what = f"an integer <= {maximum}"
        else:
            what = "an integer"
        raise ValueError(
            f"`{name}` must be {what}{_hint(hint)}; received "
            f"{name}={describe(value)}."
        )
    return int(value)


def check_positive_int(value, name, hint=""):
    """``value`` as an int if it is an integer >= 1."""
    return check_int(value, name, minimum=1, hint=hint)


def check_one_of(value, name, options, hint=""):
    """``value`` if it is one of ``options`` (compared with ``==``)."""
    try:
        ok = any(value == option and type(value) is type(option) for option in options)
    except Exception:  # an array compared with a string, ...
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` must be one of {tuple(options)}{_hint(hint)}; received "
            f"{name}={describe(value)}."
        )
    return value


def check_bool(value, name):
    """``value`` as a bool if it is one (numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"`{name}` must be True or False; received {name}={describe(value)}."
        )
    return bool(value)


def check_seed(value, name="seed", allow_none=True):
    """``value`` as an int in ``[0, 2**63 - 1]`` (or None when allowed)."""
    if value is None and allow_none:
        return None
    return check_int(
        value, name, minimum=0, maximum=MAX_SEED,
        hint="a seed for the random draws" + (", or None" if allow_none else ""),
    )


def check_pair(value, name, check=None):
    """A pair ``(a, b)`` of two numbers, each passed through ``check(value,
    name)`` (default :func:`check_number`); returned as a tuple."""
    if (
        isinstance(value, (str, bytes))
        or not hasattr(value, "__len__")
        or len(value) != 2
    ):
        raise ValueError(
            f"`{name}` must be a pair of two numbers; received "
            f"{name}={describe(value)}."
        )
    check = check or check_number
    return (check(value[0], f"{name}[0]"), check(value[1], f"{name}[1]"))


def _array_kind_error(value, name):
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    if module.startswith("scipy.sparse") or hasattr(value, "tocsr"):
        return TypeError(
            f"`{name}` is a sparse matrix ({cls.__name__}); keras_gmm needs "
            f"dense data: pass {name}.toarray() (or a tf.data.Dataset of dense "
            "batches for data too large to densify)."
        )
    return None


def check_array(value, name, *, ndim=None, min_ndim=None, n_features=None,
                dtype=None, allow_nan=False, min_rows=1, copy=False):
    """``value`` as a NumPy array, checked.

    Args:
        value: array-like of real numbers (lists, NumPy arrays, tensors).
        name: the argument's name, for messages.
        ndim: the exact rank required (None: any); ``min_ndim``: the least.
        n_features: the required size of the last axis (None: any).
        dtype: the NumPy dtype to return (None: float64 for integer and bool
            input, else kept).
        allow_nan: whether NaN and inf are accepted (scoring paths keep them
            so that a NaN row gets a NaN output; fitting refuses them).
        min_rows: the least number of rows (first axis) when ``ndim``/
            ``min_ndim`` is given; 1 refuses empty data.

    Raises:
        TypeError: a sparse matrix, or values that are not numbers (strings,
            objects).
        ValueError: complex values, a wrong rank or feature count, too few
            rows, NaN/inf (unless ``allow_nan``).
    """
    error = _array_kind_error(value, name)
    if error is not None:
        raise error
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists, ...
        raise ValueError(
            f"`{name}` must be an array of numbers with one shape; "
            f"received {name}={describe(value)} ({exc})."
        ) from None
    if np.iscomplexobj(array):
        raise ValueError(
            f"`{name}` must hold real numbers; received complex values "
            f"(dtype {array.dtype}). Pass {name}.real (or abs) explicitly if "
            "that is what you mean."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` must hold numbers; received an array of dtype "
            f"{array.dtype} ({describe(value)})."
        )
    if ndim is not None and array.ndim != ndim:
        shape_text = {1: "[n]", 2: "[n, n_features]"}.get(ndim, f"rank {ndim}")
        raise ValueError(
            f"`{name}` must be {ndim}-D ({shape_text}); received an array of "
            f"shape {array.shape}."
            + (" Reshape a single sample with x.reshape(1, -1), a single feature "
               "with x.reshape(-1, 1)." if ndim == 2 and array.ndim == 1 else "")
        )
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must have at least {min_ndim} axes; received an array of "
            f"shape {array.shape}."
        )
    if (ndim is not None or min_ndim is not None) and min_rows and (
        array.shape[0] < min_rows
    ):
        raise ValueError(
            f"`{name}` must have at least {min_rows} row"
            f"{'s' if min_rows > 1 else ''}; received an array of shape "
            f"{array.shape}."
        )
    if n_features is not None and (array.ndim == 0 or array.shape[-1] != n_features):
        raise ValueError(
            f"`{name}` must have {n_features} features (last axis); received an "
            f"array of shape {array.shape}."
        )
    if dtype is None and array.dtype.kind in "biu":
        dtype = np.float64
    if dtype is not None:
        array = array.astype(dtype, copy=copy)
    elif copy:
        array = array.copy()
    if not allow_nan and array.size and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(
            f"`{name}` must be finite; it holds NaN or inf (first at index "
            f"{where}). Drop or impute those values first."
        )
    return array


def check_permutation(order, num_components, name="order"):
    """``order`` as an int64 array if it is a permutation of
    ``range(num_components)`` (a relabelling: new component k = old component
    ``order[k]``)."""
    if hasattr(order, "numpy") and callable(order.numpy):
        order = order.numpy()
    try:
        array = np.asarray(order) if not isinstance(order, (str, bytes)) else None
    except Exception:  # noqa: BLE001 - anything that is not array-like
        array = None
    ok = (
        array is not None
        and array.ndim == 1
        and array.dtype.kind in "iu"
        and len(array) == num_components
        and np.array_equal(np.sort(array), np.arange(num_components))
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be a permutation of range({num_components}) (new "
            f"component k = old component {name}[k], every index once); "
            f"received {name}={describe(order)}."
        )
    return array.astype(np.int64)


def check_rows(bad, name, what, fix):
    """A ValueError if any row flagged in ``bad`` (bool ``[n]``): how many,
    the first, and the fix (e.g. ``what="contains NaN or inf"``)."""
    bad = np.asarray(bad, bool)
    if np.any(bad):
        raise ValueError(
            f"`{name}` {what} in {int(np.sum(bad))} of {len(bad)} rows (first "
            f"at row {int(np.flatnonzero(bad)[0])}); {fix}."
        )
