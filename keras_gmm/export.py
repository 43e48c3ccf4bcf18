"""SavedModel export in the TF Serving layout.

:func:`export_saved_model` writes a Keras model as a TensorFlow SavedModel
under ``export_dir/<version>/`` (``saved_model.pb`` + ``variables/``), the
layout `TensorFlow Serving <https://www.tensorflow.org/tfx/guide/serving>`_
watches. The SavedModel is self-contained: it loads with
``tf.saved_model.load`` in a process that has neither keras_gmm nor
TensorFlow Probability (every exported computation is core TensorFlow).

Signatures
----------
Every export has :data:`SERVING_DEFAULT` (``"serving_default"``): the model's
forward pass (inference mode). Its inputs are named after the model's inputs
(the dict keys of a dict-input Functional model, otherwise the names of the
``keras.Input`` layers), its outputs after the model's outputs (the dict keys
of a dict-output model, otherwise the names of the layers producing them), all
sanitized to ``[A-Za-z][A-Za-z0-9_]*``. The batch dimension is ``None``; other
unknown dimensions (time, image size) stay ``None``; the last (feature) axis
of every input of rank >= 2 must be known.

When a model output is produced by a layer that offers *endpoints* (see
below), the export also has one signature per endpoint. For
:class:`keras_gmm.MixtureDensityHead` they are:

- :data:`MIXTURE_PARAMETERS` (``"mixture_parameters"``): the same inputs as
  ``serving_default``; outputs ``weights [b, K]``, ``means [b, K, D]``,
  ``stddevs [b, K, D]`` (marginal standard deviations of each component, for
  every covariance type), ``mean [b, D]`` (the mixture mean) and, for
  covariance_type "full" ``scale_tril [b, K, D, D]`` / for "tied"
  ``scale_tril [b, D, D]`` (lower Cholesky factors of the covariances).
- :data:`SAMPLE` (``"sample"``): the same inputs plus ``temperature``
  (float32 scalar, >= 0), ``sigma_temperature`` (float32 scalar, >= 0) and
  ``seed`` (int64 ``[2]``); output ``samples [b, D]``, one draw per input
  row. Sampling is stateless: the same seed gives the same samples.
  ``temperature = sigma_temperature = 0`` gives the mean of the most probable
  component (``head.greedy``). See :meth:`MixtureDensityHead.sample`.

(With leading dimensions besides the batch, e.g. ``[b, T, F]`` inputs, every
shape above gets the same extra leading dimensions.)

For :class:`keras_gmm.GMMPriorSampling` (a VAE latent with a mixture prior,
whose output is the latent ``z`` or, with ``return_cluster_probabilities``,
the cluster probabilities) they are:

- :data:`GENERATE` (``"generate"``): inputs ``n`` (int32 scalar),
  ``temperature`` (float32 scalar >= 0, multiplies the components' standard
  deviations) and ``seed`` (int64 ``[2]``), **not** the model's inputs;
  outputs ``latent [n, D]`` drawn from the prior, ``component [n]`` (int32)
  and, for every output of the graph calling the layer that is computed from
  its samples alone (the decoder's), that output on the drawn latents, under
  its own name (e.g. ``images [n, ...]``).
- :data:`GENERATE_COMPONENT` (``"generate_component"``): the same with one
  more input, ``component`` (int32 scalar in ``[0, K)``): every draw from
  that component.
- :data:`RECONSTRUCT` (``"reconstruct"``, only when there are such decoded
  outputs and they are outputs of the exported model or of a model nested in
  it): the model's inputs in, the decoded outputs of their latents out (with
  the layer's ``inference="mean"``: of ``z_mean``).

Endpoints of other layers
-------------------------
An *endpoint provider* maps a layer to ``{name: ExportEndpoint(fn,
extra_inputs)}``:

- ``fn(outputs, **extra)`` receives ``outputs``, the tensor the layer
  produced in the model's forward pass on the served inputs, and the extra
  signature inputs by keyword; it returns a dict of named tensors (the
  signature's outputs). It must use core TensorFlow ops only.
- ``extra_inputs`` maps each extra argument name to its ``tf.TensorSpec``;
  the signature takes the model's inputs followed by these.
- ``model_inputs`` (default True): with False the signature takes only
  ``extra_inputs``, does not run the model's forward pass and calls
  ``fn(**extra)`` (e.g. generation from a prior: ``n`` in, images out).

A layer offers endpoints in one of two ways, checked in this order:

1. it defines a method ``export_endpoints(self)`` returning that dict (plain
   ``(fn, extra_inputs)`` tuples are accepted, so the layer's module needs
   no import from this one);
2. its class (or a base class) is registered here with
   :func:`register_export_endpoints`, as :class:`keras_gmm.MixtureDensityHead`
   is at the bottom of this module.

A provider (or ``export_endpoints`` method) that declares a parameter named
``model`` receives the exported model, e.g. to reach other parts of its
graph (the decoder that turns prior samples into images).

The core (:func:`export_saved_model`) knows no layer: it finds the layer that
produces each model output (looking inside nested Functional/Sequential
models) and asks it for endpoints. When several outputs offer the same
endpoint name, each is exported as ``<name>_<output name>``.

Serving
-------
::

    tensorflow_model_server --rest_api_port=8501 --model_name=mdn \\
        --model_base_path=/abs/path/to/export_dir

TF Serving loads the highest numbered version; writing version ``N + 1``
next to it makes it switch. Each version is written to a hidden temporary
directory and renamed into place, so the server never sees a half-written
version. REST calls (``POST /v1/models/mdn:predict``):

- row format, one object per example (``serving_default``,
  ``mixture_parameters``)::

      {"instances": [{"x": [0.1, 0.2, 0.3]}, {"x": [0.4, 0.5, 0.6]}]}

  (for a single-input model also ``{"instances": [[0.1, 0.2, 0.3], ...]}``);
- columnar format, needed for ``sample`` whose scalar inputs have no batch
  dimension::

      {"signature_name": "sample",
       "inputs": {"x": [[0.1, 0.2, 0.3]], "temperature": 1.0,
                  "sigma_temperature": 1.0, "seed": [1, 2]}}

The answer is ``{"predictions": ...}`` (row format) or ``{"outputs": ...}``
(columnar), keyed by the output names above. ``saved_model_cli show --dir
export_dir/1 --all`` lists the signatures with their names and shapes.
"""

import functools
import inspect
import keyword
import os
import shutil
import tempfile
import types
from typing import Callable, Mapping, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_gmm.layers import GMMPriorSampling, MixtureDensityHead

__all__ = [
    "SERVING_DEFAULT",
    "MIXTURE_PARAMETERS",
    "SAMPLE",
    "GENERATE",
    "GENERATE_COMPONENT",
    "RECONSTRUCT",
    "ExportEndpoint",
    "export_saved_model",
    "register_export_endpoints",
]

#: The model's forward pass; the signature TF Serving uses when a request
#: names none.
SERVING_DEFAULT = "serving_default"
#: The named, constrained mixture parameters of a MixtureDensityHead output.
MIXTURE_PARAMETERS = "mixture_parameters"
#: Stateless, seeded samples from a MixtureDensityHead output.
SAMPLE = "sample"
#: Generation from the prior of a GMMPriorSampling output (``n`` in).
GENERATE = "generate"
#: Generation from one component of that prior (``component`` and ``n`` in).
GENERATE_COMPONENT = "generate_component"
#: The decoded outputs of a GMMPriorSampling model for its inputs.
RECONSTRUCT = "reconstruct"


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


_ENDPOINT_PROVIDERS = {}


def register_export_endpoints(layer_class):
    """Register an endpoint provider for a layer class (a decorator).

    The provider ``provider(layer) -> {name: ExportEndpoint}`` is used for
    instances of ``layer_class`` and its subclasses (unless they define
    ``export_endpoints``); see the module docstring.

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
    if not (
        isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)
    ):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer; received "
            f"layer_class={layer_class!r}."
        )

    def decorator(provider):
        _ENDPOINT_PROVIDERS[layer_class] = provider
        return provider

    return decorator


# --------------------------------------------------------------------------
# the exporter
# --------------------------------------------------------------------------
def export_saved_model(model, export_dir, version=1, overwrite=False):
    """Export a Keras model as a SavedModel for TensorFlow Serving.

    Writes ``export_dir/<version>/saved_model.pb`` (and ``variables/``) with
    the signatures described in :mod:`keras_gmm.export`: ``serving_default``
    (the forward pass, named inputs and outputs, batch dimension ``None``) and,
    for a model whose output is a :class:`keras_gmm.MixtureDensityHead`,
    ``mixture_parameters`` and ``sample``. The SavedModel needs neither
    keras_gmm nor TensorFlow Probability to load and run.

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
    version = _check_version(version)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ValueError(
            f"`overwrite` must be a bool; received overwrite={overwrite!r}."
        )
    try:
        export_dir = os.fspath(export_dir)
    except TypeError:
        raise TypeError(
            "`export_dir` must be a str or path-like; received "
            f"export_dir={export_dir!r} of type {type(export_dir).__name__}."
        ) from None
    target = os.path.join(export_dir, str(version))
    if os.path.lexists(target) and not overwrite:
        raise ValueError(
            f"The version directory {target!r} already exists (export_dir="
            f"{export_dir!r}, version={version}). Pass overwrite=True to "
            "replace it, or export a higher version."
        )

    input_names, input_specs = _input_signature(model)
    output_names = _output_names(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_DEFAULT,
        _serving_fn(model, len(input_specs), output_names),
        input_signature=input_specs,
    )
    for name, (fn, extra_specs, index, model_inputs) in _layer_endpoints(
        model, output_names, input_names
    ).items():
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
            endpoint, signature = _standalone_fn(fn, list(extra_specs)), extra_signature
        archive.add_endpoint(name, endpoint, input_signature=signature)
    _write_atomically(archive, export_dir, target, version)
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
            f"received model={model!r} of type {type(model).__name__}."
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


def _check_version(version):
    if (
        isinstance(version, (bool, np.bool_))
        or not isinstance(version, (int, np.integer))
        or version < 1
    ):
        raise ValueError(
            "`version` must be a positive integer (the TF Serving version "
            f"directory); received version={version!r}."
        )
    return int(version)


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


def _endpoint_provider(layer, model):
    method = getattr(layer, "export_endpoints", None)
    if callable(method):
        return lambda: _call_provider(method, model)
    for cls in type(layer).__mro__:
        if cls in _ENDPOINT_PROVIDERS:
            provider = functools.partial(_ENDPOINT_PROVIDERS[cls], layer)
            return lambda: _call_provider(provider, model)
    return None


def _call_provider(provider, model):
    """``provider()``, or ``provider(model=model)`` when it takes ``model``."""
    try:
        parameters = inspect.signature(provider).parameters
    except (TypeError, ValueError):  # no introspectable signature
        parameters = {}
    return provider(model=model) if "model" in parameters else provider()


def _layer_endpoints(model, output_names, input_names):
    """``{signature name: (fn, extra_specs, output index, model_inputs)}`` for
    every model output whose producing layer offers endpoints."""
    offered = []  # (endpoint name, output index, fn, extra specs)
    for index, tensor in enumerate(model.outputs):
        layer = _producing_layer(tensor)
        provider = _endpoint_provider(layer, model) if layer is not None else None
        if provider is None:
            continue
        for name, endpoint in dict(provider()).items():
            if callable(endpoint):
                endpoint = (endpoint,)
            fn, extra, model_inputs = ExportEndpoint(*endpoint)
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


def _write_atomically(archive, export_dir, target, version):
    """Write to a hidden temporary directory, then rename it to ``target``.

    TF Serving only picks up numeric directory names, so it never sees the
    temporary one; an overwritten version is restored if the rename fails.
    """
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
    old = None
    try:
        archive.write_out(tmp, verbose=False)
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
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a success
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------
# endpoints of keras_gmm layers
# --------------------------------------------------------------------------
@register_export_endpoints(MixtureDensityHead)
def _mixture_density_head_endpoints(head):
    """``mixture_parameters`` and ``sample`` for a MixtureDensityHead output."""

    def mixture_parameters(params):
        out = dict(head.component_params(params))
        out["mean"] = head.mean(params)
        return out

    def sample(params, temperature, sigma_temperature, seed):
        # mixture.sample checks in-graph that both temperatures are >= 0.
        samples = head.sample(
            params,
            temperature=temperature,
            sigma_temperature=sigma_temperature,
            seed=seed,
        )
        return {"samples": samples}

    scalar = tf.TensorSpec([], tf.float32)
    return {
        MIXTURE_PARAMETERS: ExportEndpoint(mixture_parameters),
        SAMPLE: ExportEndpoint(
            sample,
            {
                "temperature": scalar,
                "sigma_temperature": scalar,
                "seed": tf.TensorSpec([2], tf.int64),
            },
        ),
    }


# --------------------------------------------------------------------------
# GMMPriorSampling: generation from the prior, reconstruction
# --------------------------------------------------------------------------
def _graph_nodes(graph):
    return {node for nodes in graph._nodes_by_depth.values() for node in nodes}


def _find_call(layer, model, chain=()):
    """``(chain, graph, node)``: the Functional ``graph`` (``model`` or one
    nested in it) where ``layer`` is called, the call ``node`` and the
    ``chain`` of ``(parent graph, node calling the child)`` from ``model``
    down to ``graph``; None when not found."""
    if not hasattr(model, "_nodes_by_depth"):  # not a Functional graph
        return None
    nodes = _graph_nodes(model)
    for node in layer._inbound_nodes:
        if node in nodes:
            return chain, model, node
    for node in nodes:
        inner = node.operation
        if isinstance(inner, keras.Model) and inner is not layer:
            found = _find_call(layer, inner, chain + ((model, node),))
            if found is not None:
                return found
    return None


def _computed_from(tensor, source, memo):
    """Whether ``tensor`` is computed from the KerasTensor ``source`` alone."""
    if tensor is source:
        return True
    key = id(tensor)
    if key not in memo:
        memo[key] = False  # guards against revisiting while in progress
        history = tensor._keras_history
        node = history.operation._inbound_nodes[history.node_index]
        parents = node.input_tensors
        memo[key] = (
            not node.is_input
            and bool(parents)
            and all(_computed_from(t, source, memo) for t in parents)
        )
    return memo[key]


def _lift(tensors, chain):
    """The tensors of the top graph that ``tensors`` (outputs of the innermost
    graph of ``chain``) become, or None if one is not an output on the way."""
    for parent, node in reversed(chain):
        inner = node.operation
        lifted = []
        for tensor in tensors:
            index = next(
                (i for i, out in enumerate(inner.outputs) if out is tensor), None
            )
            if index is None:
                return None
            lifted.append(node.outputs[index])
        tensors = lifted
    return tensors


def _samples_consumers(prior, model):
    """``(names, generator, reconstructor)`` for the outputs of the graph that
    calls ``prior`` which are computed from its samples alone (a decoder):
    ``generator`` maps samples to them, ``reconstructor`` maps ``model``'s
    inputs to them (None when they are not outputs of ``model``'s graph);
    None when there are no such outputs."""
    found = _find_call(prior, model)
    if found is None:
        return None
    chain, graph, node = found
    samples = node.outputs[0]
    memo = {}
    picked = [
        (name, out)
        for name, out in zip(
            _flat_names(_structure(graph, "output"), graph.outputs, _layer_name),
            graph.outputs,
        )
        if out._keras_history.operation is not prior
        and _computed_from(out, samples, memo)
    ]
    if not picked:
        return None
    names = [_sanitize(name, "output") for name, _ in picked]
    tensors = [out for _, out in picked]
    generator = keras.Model(samples, tensors, name=f"{prior.name}_generator")
    lifted = _lift(tensors, chain)
    reconstructor = None
    if lifted is not None:
        reconstructor = keras.Model(
            model.inputs, lifted, name=f"{prior.name}_reconstructor"
        )
    return names, generator, reconstructor


@register_export_endpoints(GMMPriorSampling)
def _gmm_prior_sampling_endpoints(prior, model=None):
    """``generate``, ``generate_component`` and ``reconstruct`` for a model
    output produced by a GMMPriorSampling layer."""
    consumers = _samples_consumers(prior, model) if model is not None else None
    names, generator, reconstructor = consumers or ([], None, None)

    def decode(z):
        if generator is None:
            return {}
        outputs = keras.tree.flatten(generator(z, training=False))
        return {
            (f"decoded_{name}" if name in ("latent", "component") else name): out
            for name, out in zip(names, outputs)
        }

    def generate(n, temperature, seed, component=None):
        z, components = prior.sample_prior(
            n, component=component, temperature=temperature, seed=seed,
            return_components=True,
        )
        return {"latent": z, "component": components, **decode(z)}

    scalar = tf.TensorSpec([], tf.float32)
    sampling = {
        "n": tf.TensorSpec([], tf.int32),
        "temperature": scalar,
        "seed": tf.TensorSpec([2], tf.int64),
    }
    endpoints = {
        GENERATE: ExportEndpoint(generate, sampling, model_inputs=False),
        GENERATE_COMPONENT: ExportEndpoint(
            generate,
            {"component": tf.TensorSpec([], tf.int32), **sampling},
            model_inputs=False,
        ),
    }
    if reconstructor is not None:
        input_names, input_specs = _input_signature(model)

        def reconstruct(**inputs):
            flat = [inputs[name] for name in input_names]
            outputs = reconstructor(
                flat if len(flat) > 1 else flat[0], training=False
            )
            return dict(zip(names, keras.tree.flatten(outputs)))

        endpoints[RECONSTRUCT] = ExportEndpoint(
            reconstruct, dict(zip(input_names, input_specs)), model_inputs=False
        )
    return endpoints
