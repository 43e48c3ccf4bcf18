"""Export endpoint of :class:`keras_gmm.GaussianMixtureClassifier`: the
features' log-likelihood, an out-of-distribution score."""

import keras

from keras_gmm.export._core import (
    ExportEndpoint,
    _input_signature,
    _producing_layer,
    register_export_endpoints,
)
from keras_gmm.layers import GaussianMixtureClassifier

__all__ = ["LOG_LIKELIHOOD", "features_model"]

#: ``log p(f)`` of the classifier's features for the model's inputs.
LOG_LIKELIHOOD = "log_likelihood"


def _features_of(graph, tensor):
    """The features (a KerasTensor of ``graph``) that the classifier
    producing ``tensor`` (an output of ``graph``) is called on, looking
    inside nested Functional/Sequential models; None if not found."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op = history.operation
    node = op._inbound_nodes[history.node_index]
    if isinstance(op, keras.Model) and not isinstance(op, GaussianMixtureClassifier):
        try:
            inner = op.outputs[history.tensor_index]
            inner_inputs = op.inputs
        except (AttributeError, ValueError, IndexError):
            return None
        inner_features = _features_of(op, inner)
        if inner_features is None:
            return None
        # The nested model's inputs -> features, called on its inputs in
        # ``graph`` (a throwaway model: ``op`` itself is left as it is).
        to_features = keras.Model(inner_inputs, inner_features)
        args = node.arguments.args
        return to_features(args[0] if len(args) == 1 else list(args))
    if not isinstance(op, GaussianMixtureClassifier):
        return None
    tensors = node.input_tensors
    return tensors[0] if len(tensors) == 1 else None


def features_model(classifier, model, output_index):
    """``keras.Model(model.inputs, features)``: the model's inputs to the
    features its output ``output_index`` (produced by ``classifier``) is
    computed from. A ValueError names the layer when the features cannot be
    reached from the model's inputs."""
    try:
        features = _features_of(model, model.outputs[output_index])
        if features is not None:
            return keras.Model(model.inputs, features)
    except (AttributeError, ValueError, TypeError):
        pass
    raise ValueError(
        f"Cannot export the {LOG_LIKELIHOOD!r} endpoint of layer "
        f"{classifier.name!r} (GaussianMixtureClassifier) of model "
        f"{model.name!r}: its input features cannot be traced back to the "
        "model's inputs. Export a Functional or Sequential model (built with "
        "keras.Input) that calls the classifier once on one features tensor."
    )


@register_export_endpoints(GaussianMixtureClassifier)
def gaussian_mixture_classifier_endpoints(classifier, model=None):
    """``log_likelihood``: the model's inputs in, ``log_likelihood [b]`` out,
    ``log p(f) = log sum_c pi_c p(f | c)`` of the features the classifier
    sees (:meth:`GaussianMixtureClassifier.log_likelihood`; low = out of
    distribution, NaN for an input row that gives NaN features), whatever
    the layer's ``output_mode``."""
    if model is None:
        return {}
    index = next(
        i for i, out in enumerate(model.outputs)
        if _producing_layer(out) is classifier
    )
    to_features = features_model(classifier, model, index)
    input_names, input_specs = _input_signature(model)

    def log_likelihood(**inputs):
        flat = [inputs[name] for name in input_names]
        features = to_features(flat if len(flat) > 1 else flat[0], training=False)
        return {"log_likelihood": classifier.log_likelihood(features)}

    return {
        LOG_LIKELIHOOD: ExportEndpoint(
            log_likelihood, dict(zip(input_names, input_specs)),
            model_inputs=False,
        )
    }

