"""A GAN on 28x28 MNIST whose latent is a learnable Gaussian mixture (DeLiGAN).

DeLiGAN (Gurumurthy, Sarvadevabhatla and Babu, CVPR 2017) feeds the
generator a draw from a mixture of ``K`` Gaussians whose means and standard
deviations are trained with the generator, through the reparameterization
``z = mu_c + sigma_c * eps``, instead of a fixed ``N(0, I)``. Here the
mixture is a :class:`keras_gmm.GMMPriorSampling` layer: its
:meth:`~keras_gmm.GMMPriorSampling.sample_prior` is reparameterized per
component, so the generator loss reaches ``prior.means`` and
``prior.log_variances``. As in DeLiGAN, the component weights stay uniform
(the component draw is discrete: no gradient reaches the logits), the means
start uniform in ``[-1, 1]`` and the standard deviations at 0.2, and a small
penalty ``lambda / K * sum_c ||1 - sigma_c||^2`` keeps the standard
deviations from collapsing to 0 (``--sigma-penalty``; here it also makes
them grow: without it the generator keeps them near their start).

The data are the 4,000 "train" images of :func:`keras_gmm.datasets.
load_mnist` (real MNIST, shipped with the package). The generator and the
discriminator are small dense nets (two hidden layers each; the generator's
batch-normalized, the discriminator seeing the batch's spread, a minibatch
standard deviation feature against mode collapse), trained with the
non-saturating GAN loss, one-sided label smoothing and Adam in a plain
``tf.GradientTape`` loop.
A tiny softmax classifier (one hidden layer), trained here on the same
images and scored on the 1,000 held-out "test" images, is the quality proxy:
each generated digit gets its predicted class and the classifier's
confidence.

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/deligan_mnist.py          # 60 epochs, 2-5 minutes on 2 cores
    python examples/deligan_mnist.py --smoke  # a few steps: checks it runs (< 30 s)

It prints, per mixture component, its weight, its mean standard deviation
before and after training, how far its mean moved, and, for
``--per-component-eval`` samples drawn from it: the digit the classifier
sees most often, that digit's share (1.0: the component always draws one
digit), the classifier's mean confidence, the mean pixel intensity and the
spread of the samples (pixel standard deviation over them: 0 when a
component draws one image again and again), next to those of real images. It writes ``deligan_mnist.png`` into
``--output-dir``: a grid of generated digits, one row per mixture component.
"""

import argparse
import math
import time
from pathlib import Path

import keras
import matplotlib
import numpy as np
import tensorflow as tf

import keras_gmm
from keras_gmm import datasets

matplotlib.use("Agg")
import matplotlib.pyplot as plt

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE
# DeLiGAN's initialisation: means uniform in [-1, 1], standard deviations 0.2.
INITIAL_MEAN_RANGE = 1.0
INITIAL_SIGMA = 0.2
COVERAGE_SHARE = 0.02  # a digit counts as generated above 2% of all samples


def build_prior(num_components, latent_dim, seed):
    """The mixture latent: a built ``GMMPriorSampling`` with DeLiGAN's
    initialisation (uniform weights, means in [-1, 1], sigma 0.2)."""
    prior = keras_gmm.GMMPriorSampling(num_components, event_size=latent_dim,
                                       seed=seed, name="latent_mixture")
    prior.build([(None, latent_dim), (None, latent_dim)])
    rng = np.random.default_rng(seed)
    prior.means.assign(rng.uniform(-INITIAL_MEAN_RANGE, INITIAL_MEAN_RANGE,
                                   (num_components, latent_dim)).astype("float32"))
    prior.log_variances.assign(
        np.full((num_components, latent_dim), 2.0 * math.log(INITIAL_SIGMA), "float32"))
    return prior


class MinibatchStddev(keras.layers.Layer):
    """Appends the mean over features of the batch's standard deviation
    (Karras et al., 2018): the discriminator sees how diverse a batch is, which
    discourages a collapsed generator (DeLiGAN used minibatch features too)."""

    def call(self, x):
        spread = keras.ops.mean(keras.ops.std(x, axis=0))
        return keras.ops.concatenate(
            [x, keras.ops.ones_like(x[:, :1]) * spread], axis=-1)


def build_generator(latent_dim, hidden):
    """Two hidden dense layers (batch-normalized), a sigmoid: pixels in [0, 1]."""
    return keras.Sequential([
        keras.Input((latent_dim,)),
        keras.layers.Dense(hidden),
        keras.layers.BatchNormalization(),
        keras.layers.LeakyReLU(0.2),
        keras.layers.Dense(2 * hidden),
        keras.layers.BatchNormalization(),
        keras.layers.LeakyReLU(0.2),
        keras.layers.Dense(PIXELS, activation="sigmoid"),
    ], name="generator")


def build_discriminator(hidden):
    """Two hidden dense layers, the minibatch spread, a logit."""
    return keras.Sequential([
        keras.Input((PIXELS,)),
        keras.layers.Dense(2 * hidden),
        keras.layers.LeakyReLU(0.2),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(hidden),
        keras.layers.LeakyReLU(0.2),
        MinibatchStddev(),
        keras.layers.Dense(1),  # a logit: real vs generated
    ], name="discriminator")


def sigma_penalty(prior):
    """DeLiGAN's ``1 / K * sum_c ||1 - sigma_c||^2`` (before ``lambda``)."""
    return tf.reduce_mean(tf.reduce_sum(tf.square(1.0 - prior.stddevs), axis=-1))


def train_gan(x, prior, generator, discriminator, steps, batch_size, sigma_weight,
              seed, log_every):
    """Alternate one discriminator and one generator step, ``steps`` times.

    The generator's variables include the mixture's means and log-variances
    (``prior.logits`` gets no gradient: the component draw is discrete)."""
    d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
    g_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
    g_vars = generator.trainable_variables + [prior.means, prior.log_variances]
    d_vars = discriminator.trainable_variables
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(real, step_seed):
        n = tf.shape(real)[0]
        with tf.GradientTape() as d_tape:
            z = prior.sample_prior(n, seed=step_seed)
            fake = generator(z, training=True)
            real_logit = discriminator(real, training=True)
            fake_logit = discriminator(fake, training=True)
            # One-sided label smoothing (real targets 0.9).
            d_loss = (bce(0.9 * tf.ones_like(real_logit), real_logit)
                      + bce(tf.zeros_like(fake_logit), fake_logit))
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        with tf.GradientTape() as g_tape:
            z = prior.sample_prior(n, seed=step_seed + [0, 1])
            fake_logit = discriminator(generator(z, training=True), training=True)
            adversarial = bce(tf.ones_like(fake_logit), fake_logit)
            g_loss = adversarial + sigma_weight * sigma_penalty(prior)
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        return d_loss, adversarial

    rng = np.random.default_rng(seed)
    batches_per_epoch = len(x) // batch_size
    order = rng.permutation(len(x))
    for i in range(steps):
        j = i % batches_per_epoch
        if j == 0 and i > 0:
            order = rng.permutation(len(x))
        real = tf.constant(x[order[j * batch_size:(j + 1) * batch_size]])
        d_loss, g_loss = step(real, tf.constant([seed, 2 * i], tf.int64))
        if log_every and ((i + 1) % log_every == 0 or i + 1 == steps):
            print(f"  step {i + 1:>5}/{steps}: discriminator loss "
                  f"{float(d_loss):.3f}, generator loss {float(g_loss):.3f}, "
                  f"mean sigma {float(tf.reduce_mean(prior.stddevs)):.3f}")


def train_classifier(x, y, x_test, y_test, epochs, seed):
    """A 784-128-10 softmax classifier: the quality proxy."""
    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential([
        keras.Input((PIXELS,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="classifier")
    classifier.compile(keras.optimizers.Adam(1e-3),
                       "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    probs = classifier.predict(x_test, verbose=0)
    accuracy = float(np.mean(probs.argmax(-1) == y_test))
    return classifier, accuracy, float(probs.max(-1).mean())


def generate(prior, generator, component, n, seed):
    z = prior.sample_prior(n, component=component, seed=seed)
    return np.asarray(generator(z, training=False))


def spread(images):
    """Within-group diversity: each pixel's standard deviation over the
    images, averaged over the pixels (0: every image the same)."""
    return float(np.asarray(images).std(axis=0).mean())


def component_stats(prior, generator, classifier, n, seed):
    """Per component: ``(digit, share, confidence, mean_pixel, spread)`` of
    ``n`` samples, and every sample's predicted digit."""
    rows, digits = [], []
    for c in range(prior.num_components):
        images = generate(prior, generator, c, n, seed + 1000 + c)
        probs = np.asarray(classifier(images, training=False))
        predicted = probs.argmax(-1)
        counts = np.bincount(predicted, minlength=10)
        rows.append((int(counts.argmax()), counts.max() / n,
                     float(probs.max(-1).mean()), float(images.mean()),
                     spread(images)))
        digits.append(predicted)
    return rows, np.concatenate(digits)


def plot_grid(prior, generator, rows, per_row, seed, path, title):
    """One row per mixture component, ``per_row`` samples each, labelled with
    the component's sigma and the classifier's majority digit."""
    k = prior.num_components
    montage = np.ones((k * (IMAGE_SIDE + 2), per_row * (IMAGE_SIDE + 2)), "float32")
    for c in range(k):
        images = generate(prior, generator, c, per_row, seed + c).reshape(
            -1, IMAGE_SIDE, IMAGE_SIDE)
        for j, image in enumerate(images):
            r, q = c * (IMAGE_SIDE + 2) + 1, j * (IMAGE_SIDE + 2) + 1
            montage[r:r + IMAGE_SIDE, q:q + IMAGE_SIDE] = 1.0 - image  # ink dark
    sigmas = np.asarray(prior.stddevs).mean(axis=-1)
    # Fixed margins (inches) around square 0.5-inch cells: the PNG's size
    # follows from the grid's (no tight_layout).
    left, right, top, bottom, cell = 1.2, 1.5, 0.6, 0.35, 0.5
    width, height = left + cell * per_row + right, top + cell * k + bottom
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes([left / width, bottom / height, cell * per_row / width,
                       cell * k / height])
    ax.imshow(montage, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    centres = (np.arange(k) + 0.5) * (IMAGE_SIDE + 2) - 0.5
    ax.set_yticks(centres)
    ax.set_yticklabels([f"component {c}\nsigma {sigmas[c]:.2f}" for c in range(k)],
                       fontsize=8)
    ax.set_xticks([])
    for c in range(1, k):  # a thin line between the components' rows
        ax.axhline(c * (IMAGE_SIDE + 2) - 0.5, color="0.75", lw=0.6)
    right_axis = ax.secondary_yaxis("right")
    right_axis.set_yticks(centres)
    right_axis.set_yticklabels(
        [f"digit {d}: {share:.0%}" for d, share, *_ in rows], fontsize=8)
    right_axis.set_ylabel("classifier's majority digit (share of the samples)",
                          fontsize=8)
    ax.set_xlabel(f"{per_row} samples per component (z = mu_c + sigma_c * eps)",
                  fontsize=8)
    fig.suptitle(title, fontsize=10, y=1.0 - 0.08 / height, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return round(width * 100), round(height * 100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--components", type=int, default=10,
                        help="mixture components K (one PNG row each)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256,
                        help="width of the generator's first hidden layer")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sigma-penalty", type=float, default=0.1,
                        help="DeLiGAN's lambda on 1/K sum_c ||1 - sigma_c||^2")
    parser.add_argument("--per-row", type=int, default=12,
                        help="samples per component in the PNG (columns)")
    parser.add_argument("--per-component-eval", type=int, default=200,
                        help="samples per component scored by the classifier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps and a one-epoch classifier: checks it runs")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x, y = datasets.load_mnist("train")
    x_test, y_test = datasets.load_mnist("test")
    steps_per_epoch = len(x) // args.batch_size
    steps = 30 if args.smoke else args.epochs * steps_per_epoch
    evaluated = 50 if args.smoke else args.per_component_eval

    start = time.perf_counter()
    classifier, accuracy, real_confidence = train_classifier(
        x, y, x_test, y_test, 1 if args.smoke else 10, args.seed)
    print(f"classifier (784-128-10, trained here on {len(x)} images): held-out "
          f"accuracy {accuracy:.3f} on {len(x_test)} test images, mean "
          f"confidence {real_confidence:.3f}")

    keras.utils.set_random_seed(args.seed)
    prior = build_prior(args.components, args.latent_dim, args.seed)
    initial_means = np.asarray(prior.means).copy()
    initial_sigmas = np.asarray(prior.stddevs).mean(axis=-1)
    generator = build_generator(args.latent_dim, args.hidden)
    discriminator = build_discriminator(args.hidden)
    print(f"DeLiGAN: K={args.components} components, latent {args.latent_dim}, "
          f"{steps} steps of batch {args.batch_size} "
          f"({steps / steps_per_epoch:.1f} epochs), sigma penalty "
          f"{args.sigma_penalty:g}")
    train_gan(x, prior, generator, discriminator, steps, args.batch_size,
              args.sigma_penalty, args.seed, log_every=max(steps // 8, 1))
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.1f} s (classifier included)")

    rows, digits = component_stats(prior, generator, classifier, evaluated, args.seed)
    weights = np.asarray(prior.mixture_weights)
    sigmas = np.asarray(prior.stddevs).mean(axis=-1)
    shifts = np.linalg.norm(np.asarray(prior.means) - initial_means, axis=-1)
    print(f"per component ({evaluated} samples each; sigma: mean standard "
          "deviation over the latent dims; shift: ||mu_final - mu_init||; "
          "spread: pixel std over the samples, 0 = all alike):")
    print(f"{'component':>9} {'weight':>7} {'sigma_init':>10} {'sigma':>7} "
          f"{'shift':>7} {'digit':>5} {'share':>6} {'confidence':>10} {'pixel':>6} "
          f"{'spread':>6}")
    for c, (digit, share, conf, pixel, diversity) in enumerate(rows):
        print(f"{c:>9} {weights[c]:>7.3f} {initial_sigmas[c]:>10.4f} "
              f"{sigmas[c]:>7.4f} {shifts[c]:>7.4f} {digit:>5} {share:>6.3f} "
              f"{conf:>10.3f} {pixel:>6.3f} {diversity:>6.3f}")
    counts = np.bincount(digits, minlength=10) / len(digits)
    covered = int(np.sum(counts >= COVERAGE_SHARE))
    real_spread = np.mean([spread(x_test[y_test == d]) for d in range(10)])
    print(f"real test images: mean pixel {x_test.mean():.3f}, classifier "
          f"confidence {real_confidence:.3f}, spread within a digit "
          f"{real_spread:.3f}")
    print(f"all {len(digits)} samples: classifier confidence "
          f"{np.mean([r[2] for r in rows]):.3f}, mean pixel "
          f"{np.mean([r[3] for r in rows]):.3f}; digits generated (>= "
          f"{COVERAGE_SHARE:.0%} of the samples): {covered} of 10")
    print("digit shares of all samples: "
          + " ".join(f"{d}:{s:.3f}" for d, s in enumerate(counts)))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "deligan_mnist.png"
    width, height = plot_grid(
        prior, generator, rows, args.per_row, args.seed, path,
        f"DeLiGAN on MNIST: generated digits, one row per mixture component\n"
        f"(K={args.components}, {steps / steps_per_epoch:.1f} epochs; "
        f"{covered} of 10 digits generated)")
    print(f"wrote {path} ({width} x {height} px: {args.components} rows x "
          f"{args.per_row} samples)")


if __name__ == "__main__":
    main()
