"""Export endpoints of :class:`keras_gmm.GMMPriorSampling` (a VAE latent
with a mixture prior): generation from the prior, reconstruction."""

import keras
import tensorflow as tf

from keras_gmm.export._core import (
    ExportEndpoint,
    _flat_names,
    _input_signature,
    _layer_name,
    _sanitize,
    _structure,
    assert_number,
    register_export_endpoints,
)
from keras_gmm.layers import GMMPriorSampling

__all__ = ["GENERATE", "GENERATE_COMPONENT", "RECONSTRUCT"]

#: Generation from the prior of a GMMPriorSampling output (``n`` in).
GENERATE = "generate"
#: Generation from one component of that prior (``component`` and ``n`` in).
GENERATE_COMPONENT = "generate_component"
#: The decoded outputs of a GMMPriorSampling model for its inputs.
RECONSTRUCT = "reconstruct"


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
def gmm_prior_sampling_endpoints(prior, model=None):
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
        # GMMPriorSampling.sample_prior asserts n >= 0 and 0 <= component < K.
        temperature = assert_number(temperature, "temperature", low=0)
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
