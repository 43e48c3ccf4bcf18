"""Zoo recipe ``soft_weight_sharing_digits``: an MLP compressed by soft weight
sharing (Ullrich, Meeds & Welling, ICLR 2017) on the 8x8 digits.

A 64-300-100-10 ReLU MLP through the four steps of
:class:`keras_gmm.zoo._recipe.SoftWeightSharing` (plain training; retraining
under one 16-component :class:`keras_gmm.GMMRegularizer` on every kernel and
bias; pruning to at most 10 % non-zero and quantizing; tuning the non-zero
weights onto the shared values), the settings of the MNIST recipe but for
the epochs, batch sizes and EM rate. The saved model holds the quantized
weights. The card (settings searched, per-seed figures):
``saved_models/soft_weight_sharing_digits/metadata.json``.
"""

from keras_gmm import datasets
from keras_gmm.zoo import _recipe

NAME = "soft_weight_sharing_digits"
# A seed's targets: at most 1 point of "test" accuracy lost against the
# same MLP trained plainly, at most 10 % non-zero weights (the MNIST model's
# is 5 %: pruning this small MLP to 5 % lost 0 / 1.3 / 2.6 points).
TARGET_NONZERO = 0.10
DEFAULTS = {
    **_recipe.SOFT_WEIGHT_SHARING_DEFAULTS,
    "max_nonzero_fraction": TARGET_NONZERO,
    # Every step at batch 64: 60 epochs plain, 100 under the prior (the
    # prior re-estimated every 5 batches), then step 4.
    "pretrain_batch_size": 64, "batch_size": 64, "tune_batch_size": 64,
    "pretrain_epochs": 60, "epochs": 100, "update_every": 5,
}
RECIPE = _recipe.SoftWeightSharing(NAME, datasets.load_digits, 64, DEFAULTS,
                                   targets=(1.0, TARGET_NONZERO))
build, run, train = RECIPE.build, RECIPE.run, RECIPE.train
evaluate = RECIPE.evaluate
example_inputs = RECIPE.example_inputs
