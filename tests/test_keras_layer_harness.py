"""Keras's own layer harness (``keras.src.testing.TestCase.run_layer_test``,
imported from the installed Keras, never copied) run against every keras_gmm
layer: build, symbolic and eager calls, output shape and dtype, config and
serialization round trips, a training step (Keras's "auto" jit, i.e. XLA on
TensorFlow), the mixed-precision check (outputs' declared dtype equals the
returned one) and, where the layer advertises it, masking.
"""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

import keras_gmm


class _Harness(TestCase):
    def runTest(self):  # unittest needs one test method to instantiate
        pass


@pytest.fixture
def harness():
    case = _Harness()
    case.setUp()
    yield case
    case.tearDown()


@pytest.mark.parametrize("covariance_type", ["diag", "full", "tied", "spherical"])
def test_mixture_density_head(harness, covariance_type):
    size = keras_gmm.mixture.params_size(3, 2, covariance_type)
    harness.run_layer_test(
        keras_gmm.MixtureDensityHead,
        {"num_components": 3, "event_size": 2, "covariance_type": covariance_type,
         "seed": 0},
        input_shape=(4, 5),
        expected_output_shape=(4, size),
        expected_output_dtype="float32",
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=1,
    )


def test_mixture_density_head_on_masked_sequences(harness):
    harness.run_layer_test(
        keras_gmm.MixtureDensityHead,
        {"num_components": 2, "event_size": 1, "seed": 0},
        input_shape=(2, 6, 3),
        expected_output_shape=(2, 6, keras_gmm.mixture.params_size(2, 1)),
        supports_masking=True,
    )


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical"])
def test_gmm_conv2d(harness, covariance_type):
    harness.run_layer_test(
        keras_gmm.GMMConv2D,
        {"filters": 4, "kernel_size": 3, "num_components": 2,
         "covariance_type": covariance_type, "padding": "same"},
        input_shape=(2, 8, 8, 3),
        expected_output_shape=(2, 8, 8, 4),
    )


def test_gmm_prior_sampling(harness):
    rng = np.random.default_rng(0)
    # a tuple, not a list: tf.data (the harness's training step) needs tuples
    z = (rng.normal(size=(4, 3)).astype("float32"),
         rng.normal(size=(4, 3)).astype("float32") * 0.1)
    harness.run_layer_test(
        keras_gmm.GMMPriorSampling,
        {"num_components": 2, "event_size": 3, "seed": 0},
        input_data=z,
        expected_output_shape=(4, 3),
        expected_output_dtype="float32",
        expected_num_losses=1,
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_energy(harness, covariance_type):
    rng = np.random.default_rng(1)
    gamma = rng.uniform(size=(16, 2)).astype("float32")
    harness.run_layer_test(
        keras_gmm.GMMEnergy,
        {"covariance_type": covariance_type, "reg_covar": 1e-3},
        input_data=(rng.normal(size=(16, 3)).astype("float32"), gamma),
        expected_output_shape=(16,),
        expected_output_dtype="float32",
    )


@pytest.mark.parametrize(
    "covariance_type, output_mode, expected_shape",
    [("diag", "logits_and_distances", (4, 3, 2)), ("full", "probabilities", (4, 3))],
)
def test_gaussian_mixture_classifier(harness, covariance_type, output_mode,
                                     expected_shape):
    harness.run_layer_test(
        keras_gmm.GaussianMixtureClassifier,
        {"num_classes": 3, "components_per_class": 2,
         "covariance_type": covariance_type, "learn_priors": True,
         "output_mode": output_mode},
        input_shape=(4, 5),
        expected_output_shape=expected_shape,
        expected_output_dtype="float32",
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0,
    )
