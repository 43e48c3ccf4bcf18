"""Zoo recipe ``soft_weight_sharing_mnist``: LeNet-300-100 compressed by soft
weight sharing (Ullrich, Meeds & Welling, ICLR 2017) on 28x28 MNIST.

The four steps of :class:`keras_gmm.zoo._recipe.SoftWeightSharing` (the
digits recipe's too) on ``load_mnist("train")``: 1. train a 784-300-100-10
ReLU MLP plainly; 2. retrain it under one :class:`keras_gmm.GMMRegularizer`
(16 components, one pinned at zero) on every kernel and bias, the prior
learned by MAP EM during ``fit`` and its precision hyperprior annealed;
3. quantize, pruning to at most 5 % non-zero weights; 4. the zeros fixed, fine-tune the other
weights, pull them onto 15 shared values and snap them there. The saved
model holds the quantized weights. The card (settings tried, per-seed
figures): ``saved_models/soft_weight_sharing_mnist/metadata.json``.
"""

from keras_gmm import datasets
from keras_gmm.zoo import _recipe

NAME = "soft_weight_sharing_mnist"
# The targets, on each seed: at most 1 point of "test" accuracy lost
# against the same network trained plainly, at most 5 % non-zero weights.
TARGET_DROP_POINTS = 1.0
TARGET_NONZERO = 0.05
DEFAULTS = {
    **_recipe.SOFT_WEIGHT_SHARING_DEFAULTS,
    "max_nonzero_fraction": TARGET_NONZERO,
    # Step 1 (plain): 40 epochs at batch 128; step 2 (under the prior): 30 at
    # batch 256, the prior re-estimated every 8 batches; step 4 at batch 128.
    "pretrain_epochs": 40, "pretrain_batch_size": 128,
    "epochs": 30, "batch_size": 256, "update_every": 8,
    "tune_batch_size": 128,
}
RECIPE = _recipe.SoftWeightSharing(NAME, datasets.load_mnist, 784, DEFAULTS,
                                   targets=(TARGET_DROP_POINTS, TARGET_NONZERO))
build, train, accuracy = RECIPE.build, RECIPE.train, RECIPE.accuracy
evaluate, example_inputs = RECIPE.evaluate, RECIPE.example_inputs
