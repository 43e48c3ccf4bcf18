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
  (float32 scalar, finite, >= 0), ``sigma_temperature`` (the same) and
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

For :class:`keras_gmm.GMMEnergy` (DAGMM's anomaly score) they are:

- :data:`SCORE` (``"score"``): the model's inputs in, ``score [b]`` (the
  energy ``-log p(z)``, higher = more anomalous) out.
- :data:`PREDICT` (``"predict"``): the model's inputs in, ``is_anomaly [b]``
  (bool) and ``score [b]`` out. A row is an anomaly when its score is above
  the layer's ``threshold`` weight (``GMMEnergy.set_threshold``) **or is not
  finite**: a NaN or inf input row scores NaN or inf and is flagged anomalous,
  never normal (:func:`keras_gmm.export.gmm_energy.is_anomaly`).

For :class:`keras_gmm.GaussianMixtureClassifier` (a classifier whose
features are one Gaussian per class, L-GM) it is:

- :data:`LOG_LIKELIHOOD` (``"log_likelihood"``): the model's inputs in,
  ``log_likelihood [b]`` out: ``log p(f)``, the log-likelihood of the
  features the classifier sees under its class mixture, an
  out-of-distribution score (lower = less like the training data; NaN for
  a row that gives NaN features), whatever the layer's ``output_mode``.

Checks
------
Export refuses, before tracing or writing anything, what it cannot serve
faithfully: a model with an unfitted :class:`keras_gmm.GaussianMixtureEM`
anywhere in it (call ``fit`` first, or load a fitted model), an existing
version directory without ``overwrite=True``, an ``export_dir`` that cannot be
created or written (:func:`check_export_target` runs the same directory checks
without a model, e.g. before a long training). Inside the exported signatures
the arguments the eager methods check are asserted in-graph with the same
messages (``tf.debugging``; a failure is an ``InvalidArgumentError``), e.g.
``sample``'s ``temperature`` and ``sigma_temperature`` and ``generate``'s
``temperature`` must be finite numbers >= 0.

Endpoints of other layers
-------------------------
What export knows about a layer is declared in one place, this package: a
registry keyed by layer class (the nearest registered class in the method
resolution order wins), filled by one module per layer
(``keras_gmm/export/<layer module>.py``). Layers declare nothing about
export. An *endpoint provider*, registered with
:func:`register_export_endpoints`, maps a layer to ``{name:
ExportEndpoint(fn, extra_inputs, model_inputs)}``:

- ``fn(outputs, **extra)`` receives ``outputs``, the tensor the layer
  produced in the model's forward pass on the served inputs, and the extra
  signature inputs by keyword; it returns a dict of named tensors (the
  signature's outputs). It must use core TensorFlow ops only.
- ``extra_inputs`` maps each extra argument name to its ``tf.TensorSpec``;
  the signature takes the model's inputs followed by these.
- ``model_inputs`` (default True): with False the signature takes only
  ``extra_inputs``, does not run the model's forward pass and calls
  ``fn(**extra)`` (e.g. generation from a prior: ``n`` in, images out).

A provider that declares a parameter named ``model`` receives the exported
model, e.g. to reach other parts of its graph (the decoder that turns prior
samples into images). A *pre-export check*, registered with
:func:`register_export_check`, runs on every instance of its class anywhere
in the model and raises when the layer cannot be exported.

The core (:func:`export_saved_model`) knows no layer: it finds the layer that
produces each model output (looking inside nested Functional/Sequential
models) and asks the registry for its endpoints. When several outputs offer
the same endpoint name, each is exported as ``<name>_<output name>``.

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


from keras_gmm.export._core import (
    SERVING_DEFAULT,
    ExportEndpoint,
    check_export_target,
    export_saved_model,
    register_export_check,
    register_export_endpoints,
    signature_input_names,
)

# One module per layer registers what export knows about it.
from keras_gmm.export import bayesian_gaussian_mixture_em  # noqa: F401
from keras_gmm.export import gaussian_mixture_em  # noqa: F401
from keras_gmm.export.gaussian_mixture_classifier import LOG_LIKELIHOOD
from keras_gmm.export.gmm_energy import PREDICT, SCORE
from keras_gmm.export.gmm_prior_sampling import (
    GENERATE,
    GENERATE_COMPONENT,
    RECONSTRUCT,
)
from keras_gmm.export.mixture_density_head import MIXTURE_PARAMETERS, SAMPLE

__all__ = [
    "SERVING_DEFAULT",
    "MIXTURE_PARAMETERS",
    "SAMPLE",
    "GENERATE",
    "GENERATE_COMPONENT",
    "RECONSTRUCT",
    "SCORE",
    "PREDICT",
    "LOG_LIKELIHOOD",
    "ExportEndpoint",
    "check_export_target",
    "export_saved_model",
    "register_export_check",
    "register_export_endpoints",
    "signature_input_names",
]
