"""The exporter: signatures, the per-layer registry, the directory handling.

This module knows no keras_gmm layer. The layers' endpoints and checks are
registered from the sibling modules (one per layer, named after the layer's
module) with :func:`register_export_endpoints` and
:func:`register_export_check`; :func:`export_saved_model` asks the registry.
"""

import inspect
import keyword
import os
import shutil
import tempfile
import types
from typing import Callable, Mapping, NamedTuple, Optional

import keras
import tensorflow as tf

from keras_gmm import _validation

__all__ = [
    "SERVING_DEFAULT",
    "ExportEndpoint",
    "assert_number",
    "check_export_target",
    "export_saved_model",
    "register_export_check",
    "register_export_endpoints",
    "signature_input_names",
]

#: The model's forward pass; the signature TF Serving uses when a request
#: names none.
SERVING_DEFAULT = "serving_default"


class ExportEndpoint(NamedTuple):
    """One extra serving signature offered by a layer.

    Attributes:
        fn: ``fn(outputs, **extra) -> dict[str, Tensor]``; ``outputs`` is the
            layer's output tensor on the served inputs. With
            ``model_inputs=False``: ``fn(**extra)``.
        extra_inputs: ``{name: tf.TensorSpec}``, the signature inputs besides
            the model's own, passed to ``fn`` by keyword.
        model_inputs: True (default): the signature takes the model's inputs
            followed by ``extra_inputs`` and runs the model's forward pass.
            False: the signature takes ``extra_inputs`` only and does not run
            the model (e.g. generation from a prior: ``n`` in, images out).
    """

    fn: Callable
    extra_inputs: Mapping = types.MappingProxyType({})
    model_inputs: bool = True


# --------------------------------------------------------------------------
# the registry: what export knows about a layer class, in one place
# --------------------------------------------------------------------------
class _LayerExport(NamedTuple):
    """The registry entry of one layer class."""

    endpoints: Optional[Callable] = None  # provider(layer[, model]) -> dict
    check: Optional[Callable] = None  # check(layer[, model]) raises or None


_REGISTRY = {}


def _check_layer_class(layer_class):
    if not (
        isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)
    ):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer; received "
            f"layer_class={_validation.describe(layer_class)}."
        )


def _register(layer_class, field):
    _check_layer_class(layer_class)

    def decorator(fn):
        entry = _REGISTRY.get(layer_class, _LayerExport())
        _REGISTRY[layer_class] = entry._replace(**{field: fn})
        return fn

    return decorator


def register_export_endpoints(layer_class):
    """Register an endpoint provider for a layer class (a decorator).

    The provider ``provider(layer) -> {name: ExportEndpoint}`` is used for
    every model output produced by an instance of ``layer_class`` or of a
    subclass (the nearest registered class in the method resolution order
    wins). A provider that declares a parameter named ``model`` receives the
    exported model too (e.g. to reach the decoder that turns prior samples
    into images). Layers declare nothing about export themselves: this
    registry is the one place (see :mod:`keras_gmm.export`).

    Args:
        layer_class: a subclass of ``keras.layers.Layer``.

    Returns:
        A decorator that registers the provider and returns it unchanged.

    Example:

    ```python
    @register_export_endpoints(MyLayer)
    def _my_layer_endpoints(layer):
        def double(outputs):
            return {"double": 2.0 * outputs}
        return {"double": ExportEndpoint(double)}
    ```
    """
    return _register(layer_class, "endpoints")


def register_export_check(layer_class):
    """Register a pre-export check for a layer class (a decorator).

    ``check(layer)`` (or ``check(layer, model=model)`` when it declares
    ``model``) runs for every instance of ``layer_class`` (or a subclass)
    anywhere in the exported model, nested models included, before anything
    is traced or written; it raises (a ``ValueError`` naming the layer and the
    fix) when the layer cannot be exported as it is, e.g. an unfitted
    :class:`keras_gmm.GaussianMixtureEM`.

    Args:
        layer_class: a subclass of ``keras.layers.Layer``.

    Returns:
        A decorator that registers the check and returns it unchanged.
    """
    return _register(layer_class, "check")


def _registered(layer, field):
    """The nearest registered ``field`` (endpoints/check) for ``layer``."""
    for cls in type(layer).__mro__:
        entry = _REGISTRY.get(cls)
        if entry is not None and getattr(entry, field) is not None:
            return getattr(entry, field)
    return None


def _call_with_model(fn, layer, model):
    """``fn(layer)``, or ``fn(layer, model=model)`` when it takes ``model``."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no introspectable signature
        parameters = {}
    return fn(layer, model=model) if "model" in parameters else fn(layer)


# --------------------------------------------------------------------------
# checks that run inside exported signatures
# --------------------------------------------------------------------------
#: In-graph checks of served numbers (the eager rule, in a tf.debugging.Assert).
assert_number = _validation.assert_number


# --------------------------------------------------------------------------
# the export directory
# --------------------------------------------------------------------------
def _fspath(export_dir):
    try:
        return os.fspath(export_dir)
    except TypeError:
        raise TypeError(
            "`export_dir` must be a str or path-like; received "
            f"export_dir={_validation.describe(export_dir)} of type "
            f"{type(export_dir).__name__}."
        ) from None


def _check_target(export_dir, version, overwrite):
    """Arguments checked; the version directory, refused if it exists."""
    version = _validation.check_positive_int(
        version, "version", hint="the TF Serving version directory"
    )
    overwrite = _validation.check_bool(overwrite, "overwrite")
    export_dir = _fspath(export_dir)
    target = os.path.join(export_dir, str(version))
    if os.path.lexists(target) and not overwrite:
        raise ValueError(
            f"The version directory {target!r} already exists (export_dir="
            f"{export_dir!r}, version={version}). Pass overwrite=True to "
            "replace it, or export a higher version."
        )
    return export_dir, target, version


def _missing_dirs(path):
    """The directories ``os.makedirs(path)`` would create, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_dirs(paths):
    """Remove the directories this export created (deepest first), if empty."""
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            break


def _open_export_dir(export_dir, version):
    """Create ``export_dir`` if needed and a hidden temporary directory in
    it: ``(temporary directory, directories created)``. Raises a one-line
    ValueError naming the path and the fix when it cannot be written."""
    created = _missing_dirs(export_dir)
    fix = (
        "Pass an export_dir you can write to (e.g. under your home directory "
        "or tempfile.gettempdir())."
    )
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as error:
        _remove_dirs(created)
        reason = error.strerror or type(error).__name__
        if isinstance(error, FileExistsError) or (
            os.path.lexists(export_dir) and not os.path.isdir(export_dir)
        ):
            reason = "a file of that name exists"
        raise ValueError(
            f"Cannot create the export directory {export_dir!r} ({reason}). {fix}"
        ) from error
    try:
        tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    except OSError as error:
        _remove_dirs(created)
        raise ValueError(
            f"Cannot write in the export directory {export_dir!r} "
            f"({error.strerror or type(error).__name__}). {fix}"
        ) from error
    return tmp, created


def check_export_target(export_dir, version=1, overwrite=False):
    """Check, before any long work, that a model can be exported there.

    The checks :func:`export_saved_model` runs first, without a model: the
    arguments are valid, ``export_dir/<version>`` does not exist (unless
    ``overwrite``) and ``export_dir`` can be created and written to (what
    this check creates, it removes again).

    Args:
        export_dir, version, overwrite: as for :func:`export_saved_model`.

    Returns:
        The path of the version directory that an export would write, a str.

    Raises:
        ValueError: a bad argument, an existing version without
            ``overwrite``, or a directory that cannot be created or written
            (one line naming the path and the fix).
        TypeError: ``export_dir`` is not a str or path-like.
    """
    export_dir, target, version = _check_target(export_dir, version, overwrite)
    tmp, created = _open_export_dir(export_dir, version)
    shutil.rmtree(tmp, ignore_errors=True)
    _remove_dirs(created)
    return target


# --------------------------------------------------------------------------
# the exporter
# --------------------------------------------------------------------------
def export_saved_model(model, export_dir, version=1, overwrite=False):
    """Export a Keras model as a SavedModel for TensorFlow Serving.

    Writes ``export_dir/<version>/saved_model.pb`` (and ``variables/``) with
    the signatures described in :mod:`keras_gmm.export`: ``serving_default``
    (the forward pass, named inputs and outputs, batch dimension ``None``) and,
    for a model output produced by a keras_gmm layer, that layer's endpoints
    (e.g. ``mixture_parameters`` and ``sample`` for a
    :class:`keras_gmm.MixtureDensityHead`). The SavedModel needs neither
    keras_gmm nor TensorFlow Probability to load and run.

    Everything that can be checked without tracing is checked first, and
    nothing is written when a check fails: the arguments, the model's inputs,
    every layer's own pre-export check (an unfitted
    :class:`keras_gmm.GaussianMixtureEM` is refused), the version directory
    (an existing one needs ``overwrite=True``) and that ``export_dir`` can be
    created and written to.

    Serve it with ``tensorflow_model_server --model_base_path=<export_dir>``
    (an absolute path) and call it over REST as shown in the module
    docstring, e.g. ``POST /v1/models/<name>:predict`` with
    ``{"instances": [{"<input name>": [...]}]}``.

    Args:
        model: a built Functional or Sequential ``keras.Model`` (one made with
            ``keras.Input``, or built on data). Wrap a subclassed model first:
            ``inputs = keras.Input((F,)); keras.Model(inputs, model(inputs))``.
        export_dir: the model base directory (str or path-like, local); it is
            created if needed.
        version: positive int, the version sub-directory (default 1).
        overwrite: whether to replace an existing ``export_dir/<version>``
            (default False: raise a ValueError instead).

    Returns:
        The path of the written version directory, as a str.

    Raises:
        TypeError: ``model`` is not a keras.Model, ``export_dir`` not a path.
        ValueError: a bad argument, a model without known inputs, a layer
            that cannot be exported (e.g. unfitted), an existing version
            without ``overwrite``, an ``export_dir`` that cannot be written.

    Example:

    >>> import keras, numpy as np, tensorflow as tf, keras_gmm, tempfile
    >>> head = keras_gmm.MixtureDensityHead(num_components=3, event_size=2)
    >>> model = keras.Sequential(
    ...     [keras.Input((4,), name="x"), keras.layers.Dense(8), head])
    >>> path = keras_gmm.export_saved_model(model, tempfile.mkdtemp())
    >>> served = tf.saved_model.load(path)
    >>> sorted(served.signatures)
    ['mixture_parameters', 'sample', 'serving_default']
    >>> x = tf.constant(np.ones((5, 4), "float32"))
    >>> served.signatures["sample"](
    ...     x=x, temperature=tf.constant(1.0),
    ...     sigma_temperature=tf.constant(1.0),
    ...     seed=tf.constant([1, 2], tf.int64))["samples"].shape
    TensorShape([5, 2])
    """
    _check_model(model)
    export_dir, target, version = _check_target(export_dir, version, overwrite)
    _run_layer_checks(model)
    input_names, input_specs = _input_signature(model)
    output_names = _output_names(model)
    endpoints = _layer_endpoints(model, output_names, input_names)

    tmp, created = _open_export_dir(export_dir, version)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            SERVING_DEFAULT,
            _serving_fn(model, len(input_specs), output_names),
            input_signature=input_specs,
        )
        for name, (fn, extra_specs, index, model_inputs) in endpoints.items():
            extra_signature = [
                tf.TensorSpec(spec.shape, spec.dtype, name=arg)
                for arg, spec in extra_specs.items()
            ]
            if model_inputs:
                endpoint = _endpoint_fn(
                    model, len(input_specs), index, fn, list(extra_specs)
                )
                signature = input_specs + extra_signature
            else:
                endpoint = _standalone_fn(fn, list(extra_specs))
                signature = extra_signature
            archive.add_endpoint(name, endpoint, input_signature=signature)
        archive.write_out(tmp, verbose=False)
        _move_into_place(tmp, target, export_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_dirs(created)
        raise
    return target


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def signature_input_names(model):
    """The input names the exported signatures take, in ``model.inputs`` order.

    These are what a TF Serving client sends (``{"inputs": {name: ...}}``):
    the keys of a dict-input model, else the ``keras.Input`` layer names,
    sanitized to ``[A-Za-z][A-Za-z0-9_]*``.
    """
    _check_model(model)
    return _input_signature(model)[0]


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model (Functional or Sequential); "
            f"received model={_validation.describe(model)} of type "
            f"{type(model).__name__}."
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"`model` {model.name!r} has no defined inputs/outputs. Export needs "
            "a Functional or Sequential model with known inputs: start a "
            "Sequential model with keras.Input(shape), build it, or wrap a "
            "subclassed model: inputs = keras.Input(shape); "
            "keras.Model(inputs, model(inputs))."
        )


def _run_layer_checks(model):
    """Every registered pre-export check, on every layer of ``model``."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        check = _registered(layer, "check")
        if check is not None:
            _call_with_model(check, layer, model)


def _sanitize(name, prefix):
    """A valid signature/argument name: ``[A-Za-z][A-Za-z0-9_]*``."""
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in str(name))
    if not name or not name[0].isalpha():
        name = f"{prefix}_{name}"
    if keyword.iskeyword(name):
        name += "_"
    return name


def _flat_names(struct, tensors, fallback):
    """Names of the flat ``tensors``: their dict key when ``struct`` is a dict
    of them, else ``fallback(tensor)``."""
    keys = {}
    if isinstance(struct, dict):
        keys = {id(v): k for k, v in struct.items()}
    return [keys.get(id(t), None) or fallback(t) for t in tensors]


def _layer_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else tensor.name


def _structure(model, attr):
    """``model.input``/``model.output`` of a Functional model, else None."""
    if isinstance(model, keras.Sequential):
        return None
    try:
        return getattr(model, attr)
    except (AttributeError, ValueError):
        return None


def _input_signature(model):
    """Sanitized input names and named ``tf.TensorSpec``s (batch dim None)."""
    raw = _flat_names(_structure(model, "input"), model.inputs, _layer_name)
    names = [_sanitize(n, "input") for n in raw]
    if len(set(names)) != len(names):
        raise ValueError(
            f"The inputs of model {model.name!r} have clashing signature names "
            f"{names} (from {raw}). Give each keras.Input a distinct name of "
            "letters, digits and underscores."
        )
    specs = []
    for name, raw_name, tensor in zip(names, raw, model.inputs):
        shape = tuple(tensor.shape)
        if len(shape) >= 2 and shape[-1] is None:
            raise ValueError(
                f"Input {raw_name!r} of model {model.name!r} has shape {shape} "
                "with an unknown last (feature) axis. Give it a known size, "
                "e.g. keras.Input(shape=(..., num_features))."
            )
        specs.append(tf.TensorSpec((None,) + shape[1:], tensor.dtype, name=name))
    return names, specs


def _output_names(model):
    raw = _flat_names(_structure(model, "output"), model.outputs, _layer_name)
    names, seen = [], set()
    for n in raw:
        base = name = _sanitize(n, "output")
        i = 1
        while name in seen:
            name, i = f"{base}_{i}", i + 1
        seen.add(name)
        names.append(name)
    return names


# --------------------------------------------------------------------------
# the exported functions
# --------------------------------------------------------------------------
def _call_model(model, flat_inputs):
    """The model's flat outputs (inference mode) for its flat inputs."""
    if isinstance(model, keras.Sequential):
        outputs = model(flat_inputs[0], training=False)
    else:
        structure = keras.tree.pack_sequence_as(model.input, list(flat_inputs))
        outputs = model(structure, training=False)
    return keras.tree.flatten(outputs)


def _serving_fn(model, num_inputs, output_names):
    def serving_default(*args):
        outputs = _call_model(model, args[:num_inputs])
        return dict(zip(output_names, outputs))

    return serving_default


def _endpoint_fn(model, num_inputs, output_index, fn, extra_names):
    def endpoint(*args):
        outputs = _call_model(model, args[:num_inputs])
        extra = dict(zip(extra_names, args[num_inputs:]))
        return dict(fn(outputs[output_index], **extra))

    return endpoint


def _standalone_fn(fn, extra_names):
    def endpoint(*args):
        return dict(fn(**dict(zip(extra_names, args))))

    return endpoint


def _producing_layer(tensor):
    """The layer producing a model output, looking inside nested models."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op = history.operation
    if isinstance(op, keras.Model):
        try:
            inner = op.outputs[history.tensor_index]
        except (AttributeError, ValueError, IndexError):
            return op
        return _producing_layer(inner)
    return op


def _as_endpoint(layer, name, endpoint):
    """An :class:`ExportEndpoint` from what a provider returned for ``name``
    (an ExportEndpoint, a plain ``(fn, extra_inputs[, model_inputs])``
    tuple, or a bare ``fn``)."""
    if callable(endpoint):
        endpoint = (endpoint,)
    try:
        return ExportEndpoint(*endpoint)
    except TypeError:
        raise TypeError(
            f"The endpoint provider of layer {layer.name!r} returned "
            f"{_validation.describe(endpoint)} for {name!r}; expected an "
            "ExportEndpoint(fn, extra_inputs, model_inputs)."
        ) from None


def _layer_endpoints(model, output_names, input_names):
    """``{signature name: (fn, extra_specs, output index, model_inputs)}`` for
    every model output whose producing layer's class has a registered
    provider."""
    offered = []  # (endpoint name, output index, fn, extra specs, model_inputs)
    for index, tensor in enumerate(model.outputs):
        layer = _producing_layer(tensor)
        provider = _registered(layer, "endpoints") if layer is not None else None
        if provider is None:
            continue
        for name, endpoint in dict(_call_with_model(provider, layer, model)).items():
            fn, extra, model_inputs = _as_endpoint(layer, name, endpoint)
            extra = dict(extra)
            valid = isinstance(name, str) and name.isidentifier()
            if not valid or name == SERVING_DEFAULT:
                raise ValueError(
                    f"Layer {layer.name!r} offers an endpoint named {name!r}; "
                    "endpoint names must be identifiers other than "
                    f"{SERVING_DEFAULT!r}."
                )
            clash = sorted(set(extra) & set(input_names)) if model_inputs else []
            if clash:
                raise ValueError(
                    f"The {name!r} endpoint of layer {layer.name!r} takes "
                    f"extra inputs {clash} named like inputs of model "
                    f"{model.name!r}; rename those model inputs."
                )
            offered.append((name, index, fn, extra, bool(model_inputs)))
    counts = {}
    for name, *_ in offered:
        counts[name] = counts.get(name, 0) + 1
    endpoints = {}
    for name, index, fn, extra, model_inputs in offered:
        if counts[name] > 1:
            name = f"{name}_{output_names[index]}"
        endpoints[name] = (fn, extra, index, model_inputs)
    return endpoints


def _move_into_place(tmp, target, export_dir, version):
    """Rename the written temporary directory to ``target``.

    TF Serving only picks up numeric directory names, so it never sees the
    temporary one; an overwritten version is restored if the rename fails.
    """
    old = None
    try:
        if os.path.lexists(target):  # overwrite=True, checked by the caller
            old = tempfile.mkdtemp(prefix=f".old-{version}-", dir=export_dir)
            os.rename(target, os.path.join(old, "old"))
        try:
            os.rename(tmp, target)
        except OSError:
            if old is not None:
                os.rename(os.path.join(old, "old"), target)
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
