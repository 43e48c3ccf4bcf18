"""Pre-export check of :class:`keras_gmm.GaussianMixtureEM`."""

from keras_gmm.export._core import register_export_check
from keras_gmm.layers import GaussianMixtureEM

__all__ = []


@register_export_check(GaussianMixtureEM)
def check_gaussian_mixture_em(layer, model):
    """Refuse an unfitted layer: its mixture is the initial placeholder (its
    ``fitted`` weight is 0), and served responsibilities would be
    meaningless."""
    fitted = getattr(layer, "fitted", None)
    if not layer.built or fitted is None or float(fitted.numpy()) < 0.5:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) of model "
            f"{model.name!r} is not fitted, so there is no mixture to export: "
            "call its fit(x) first (or load a fitted model), then export."
        )
