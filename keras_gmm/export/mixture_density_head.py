"""Export endpoints of :class:`keras_gmm.MixtureDensityHead`."""

import tensorflow as tf

from keras_gmm.export._core import (
    ExportEndpoint,
    assert_number,
    register_export_endpoints,
)
from keras_gmm.layers import MixtureDensityHead

__all__ = ["MIXTURE_PARAMETERS", "SAMPLE"]

#: The named, constrained mixture parameters of a MixtureDensityHead output.
MIXTURE_PARAMETERS = "mixture_parameters"
#: Stateless, seeded samples from a MixtureDensityHead output.
SAMPLE = "sample"


@register_export_endpoints(MixtureDensityHead)
def mixture_density_head_endpoints(head):
    """``mixture_parameters`` and ``sample`` for a MixtureDensityHead output.

    ``sample`` asserts in-graph what :meth:`MixtureDensityHead.sample`
    checks eagerly, with the same message: ``temperature`` and
    ``sigma_temperature`` must be finite numbers >= 0.
    """

    def mixture_parameters(params):
        out = dict(head.component_params(params))
        out["mean"] = head.mean(params)
        return out

    def sample(params, temperature, sigma_temperature, seed):
        temperature = assert_number(temperature, "temperature", low=0)
        sigma_temperature = assert_number(
            sigma_temperature, "sigma_temperature", low=0
        )
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
