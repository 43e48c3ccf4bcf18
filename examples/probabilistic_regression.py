"""Probabilistic regression of a multi-modal 2-D target: robot-arm inverse
kinematics with a full-covariance mixture density network.

A planar arm with two links (lengths ``L1 = 1.0`` and ``L2 = 0.7``) puts its
hand at ``(px, py) = L1 (cos t1, sin t1) + L2 (cos(t1 + t2), sin(t1 + t2))``.
The inverse problem, joint angles ``(t1, t2)`` from a hand position, has two
solutions for most positions: elbow up and elbow down (``t2`` of either
sign). A mean-squared-error regressor predicts their average, an arm that
misses the target; a mixture density network (``MixtureDensityHead`` with
``covariance_type="full"``, trained with ``GMMNegLogLik``) predicts the whole
``p(t1, t2 | px, py)`` and recovers both.

The data are generated here: angles drawn uniformly (``t1`` in ``[-pi/2,
pi/2]``, ``t2`` in ``[-2.8, 2.8]``), hand positions by the forward
kinematics, observed with Gaussian noise (standard deviation 0.02, a
sensor's), so each solution has a real spread. The network sees the noisy
hand position and predicts the angles divided by pi.

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/probabilistic_regression.py          # 40 epochs, about a minute
    python examples/probabilistic_regression.py --smoke  # a few epochs, small data

It prints the held-out NLL, the fraction of test positions whose two
solutions are both recovered (a component of weight >= 0.1 within 0.2 rad
of each), the coverage of the 90 % highest-density prediction regions, the
hand-position error of the most probable solution next to an MSE regressor's,
and per-component 90 % intervals at three positions; it writes
``<output-dir>/probabilistic_regression.png``: arms drawn from samples of
the model at three targets, with both true solutions, and the predicted
density over the angles at one target.
"""

import argparse
from pathlib import Path

import keras
import matplotlib
import numpy as np

import keras_gmm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

L1, L2 = 1.0, 0.7
T1_RANGE = (-np.pi / 2, np.pi / 2)
T2_LIMIT = 2.8
NUM_COMPONENTS = 5
# A test position "has two solutions" when both lie in the sampled ranges and
# their elbows differ clearly (|t2| above this).
MIN_ELBOW = 0.4
RECOVERY_RAD = 0.2
RECOVERY_WEIGHT = 0.1
HDR_LEVEL = 0.9
HAND_NOISE = 0.02


def forward(angles):
    """Hand positions ``[n, 2]`` of joint angles ``[n, 2]`` (radians)."""
    t1, t2 = angles[..., 0], angles[..., 1]
    return np.stack(
        [
            L1 * np.cos(t1) + L2 * np.cos(t1 + t2),
            L1 * np.sin(t1) + L2 * np.sin(t1 + t2),
        ],
        axis=-1,
    )


def inverse(hand):
    """The two analytic solutions ``[n, 2, 2]`` (elbow t2 > 0, then t2 < 0)."""
    px, py = hand[..., 0], hand[..., 1]
    cos_t2 = (px**2 + py**2 - L1**2 - L2**2) / (2 * L1 * L2)
    t2 = np.arccos(np.clip(cos_t2, -1.0, 1.0))
    out = []
    for sign in (1.0, -1.0):
        elbow = np.arctan2(L2 * np.sin(sign * t2), L1 + L2 * np.cos(sign * t2))
        t1 = np.arctan2(py, px) - elbow
        t1 = (t1 + np.pi) % (2 * np.pi) - np.pi
        out.append(np.stack([t1, sign * t2], axis=-1))
    return np.stack(out, axis=-2)


def in_domain(angles):
    return (
        (angles[..., 0] >= T1_RANGE[0]) & (angles[..., 0] <= T1_RANGE[1])
        & (np.abs(angles[..., 1]) <= T2_LIMIT)
    )


def make_data(n, seed):
    """``(observed hand [n, 2], angles [n, 2])``, float32."""
    rng = np.random.default_rng(seed)
    angles = np.stack(
        [rng.uniform(*T1_RANGE, size=n), rng.uniform(-T2_LIMIT, T2_LIMIT, size=n)],
        axis=-1,
    )
    hand = forward(angles) + HAND_NOISE * rng.normal(size=(n, 2))
    return hand.astype(np.float32), angles.astype(np.float32)


def build_mdn(seed):
    keras.utils.set_random_seed(seed)
    head = keras_gmm.MixtureDensityHead(
        NUM_COMPONENTS, event_size=2, covariance_type="full"
    )
    model = keras.Sequential(
        [
            keras.Input((2,), name="hand"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            head,
        ]
    )
    model.compile(keras.optimizers.Adam(2e-3), loss=head.loss())
    return model, head


def build_mse_regressor(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model.compile(keras.optimizers.Adam(2e-3), loss="mse")
    return model


def recovered_both(components, hand):
    """Per position with two in-domain, distinct solutions: whether each one
    has a component of weight >= RECOVERY_WEIGHT within RECOVERY_RAD (both
    angles). Returns ``(mask of such positions, recovered flags)``."""
    solutions = inverse(hand)  # [n, 2, 2], radians
    has_two = in_domain(solutions).all(axis=-1) & (
        np.abs(solutions[:, 0, 1]) > MIN_ELBOW
    )
    means = components["means"] * np.pi  # [n, K, 2] radians
    heavy = components["weights"] >= RECOVERY_WEIGHT  # [n, K]
    close = np.all(
        np.abs(means[:, None, :, :] - solutions[:, :, None, :]) <= RECOVERY_RAD, axis=-1
    )  # [n, 2 solutions, K]
    found = np.any(close & heavy[:, None, :], axis=-1).all(axis=-1)
    return has_two, found


def hdr_coverage(head, params, targets, num_samples, seed):
    """Fraction of targets inside their 90 % highest-density region, the
    region ``{y : log p(y | x) >= q}`` with ``q`` the 10 % quantile of the
    log-density of samples from the model."""
    n = len(params)
    repeated = np.repeat(params, num_samples, axis=0)
    samples = head.sample(repeated, seed=seed).numpy()
    log_p_samples = head.log_prob(repeated, samples).numpy().reshape(n, num_samples)
    cutoff = np.quantile(log_p_samples, 1.0 - HDR_LEVEL, axis=1)
    return float(np.mean(head.log_prob(params, targets).numpy() >= cutoff))


def _point(xy):
    """``(1.0, 0.6)``: a hand position for a label or a title."""
    return f"({float(xy[0]):.1f}, {float(xy[1]):.1f})"


def plot(model, head, path, targets, grid=120, per_target=25):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = ["tab:blue", "tab:orange", "tab:green"]
    params = model.predict(targets, verbose=0)
    samples = head.sample(np.repeat(params, per_target, axis=0), seed=1).numpy() * np.pi
    for i, (target, color) in enumerate(zip(targets, colors)):
        for angles in samples[i * per_target:(i + 1) * per_target]:
            elbow = np.array([L1 * np.cos(angles[0]), L1 * np.sin(angles[0])])
            hand = forward(angles)
            ax1.plot([0, elbow[0], hand[0]], [0, elbow[1], hand[1]], color=color,
                     alpha=0.15, lw=1)
        for solution in inverse(target[None])[0]:
            elbow = np.array([L1 * np.cos(solution[0]), L1 * np.sin(solution[0])])
            ax1.plot([0, elbow[0], target[0]], [0, elbow[1], target[1]], "k--", lw=1)
        ax1.plot(*target, "o", color=color, ms=9, mec="k",
                 label=f"target {_point(target)}: {per_target} sampled arms")
    ax1.plot([], [], "k--", lw=1, label="the 2 exact solutions of each target")
    ax1.legend(loc="upper left", fontsize=9, framealpha=0.9)
    ax1.set(title="Arms drawn from the MDN's samples", xlabel="x", ylabel="y",
            aspect="equal")
    ax1.set_ylim(top=ax1.get_ylim()[1] + 0.45)  # room for the legend

    t1 = np.linspace(T1_RANGE[0] - 0.3, T1_RANGE[1] + 0.3, grid)
    t2 = np.linspace(-np.pi, np.pi, grid)
    mesh = np.stack(np.meshgrid(t1, t2), axis=-1).reshape(-1, 2)
    grid_params = np.repeat(params[:1], len(mesh), axis=0)
    # Log-density of the angles in radians (the model predicts angles / pi),
    # shown down to 20 nats below its peak: the peaks are narrow.
    log_p = head.log_prob(grid_params, (mesh / np.pi).astype("float32")).numpy()
    log_p = (log_p - 2 * np.log(np.pi)).reshape(grid, grid)
    image = ax2.imshow(np.maximum(log_p, log_p.max() - 20), origin="lower",
                       extent=(t1[0], t1[-1], t2[0], t2[-1]), aspect="auto",
                       cmap="Greys")
    fig.colorbar(image, ax=ax2, label="log density (nats), clipped 20 below the peak")
    exact = inverse(targets[:1].astype(np.float64))[0]
    ax2.plot(exact[:, 0], exact[:, 1], "o", mfc="none", mec="tab:red", mew=2, ms=18,
             ls="none", label="the 2 exact solutions")
    drawn = head.sample(np.repeat(params[:1], 300, axis=0), seed=3).numpy() * np.pi
    ax2.scatter(drawn[:, 0], drawn[:, 1], s=14, c="tab:orange", edgecolors="k",
                linewidths=0.4, zorder=3, label="300 samples of the model")
    ax2.legend(loc="lower left", fontsize=9, framealpha=0.9)
    ax2.set(title=f"Predicted p(t1, t2 | hand at {_point(targets[0])})",
            xlabel="t1 (rad)", ylabel="t2 (rad)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true",
                        help="a few epochs on 3,000 samples, to check it works")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()

    n_train, n_test, epochs, num_samples = 40000, 2000, args.epochs, 200
    if args.smoke:
        n_train, n_test, epochs, num_samples = 3000, 300, 3, 50
    hand_train, angles_train = make_data(n_train, seed=0)
    hand_test, angles_test = make_data(n_test, seed=1)
    y_train, y_test = angles_train / np.pi, angles_test / np.pi

    model, head = build_mdn(seed=0)
    model.fit(hand_train, y_train, batch_size=256, epochs=epochs, verbose=2,
              validation_split=0.1)
    # NLL of the angles in radians: the model's density of angles / pi, minus
    # log(pi^2) for the change of variables.
    nll = model.evaluate(hand_test, y_test, batch_size=2048, verbose=0)
    nll += 2 * np.log(np.pi)
    print(f"test NLL: {nll:.4f} nats per position (angles in radians)")

    params = model.predict(hand_test, batch_size=2048, verbose=0)
    components = {k: np.asarray(v) for k, v in head.component_params(params).items()}
    has_two, found = recovered_both(components, hand_test)
    print(f"both solutions recovered: {found[has_two].mean():.3f} of the "
          f"{int(has_two.sum())} test positions with two solutions")

    coverage = hdr_coverage(head, params, y_test, num_samples, seed=2)
    print(f"90% highest-density region coverage: {coverage:.3f} (ideal 0.900)")

    greedy = head.greedy(params).numpy() * np.pi
    mdn_error = np.linalg.norm(forward(greedy) - hand_test, axis=-1).mean()
    mse_model = build_mse_regressor(seed=0)
    mse_model.fit(hand_train, y_train, batch_size=256, epochs=epochs, verbose=0)
    mse_angles = mse_model.predict(hand_test, batch_size=2048, verbose=0) * np.pi
    mse_error = np.linalg.norm(forward(mse_angles) - hand_test, axis=-1).mean()
    print(f"hand error of the most probable solution: MDN {mdn_error:.3f}, "
          f"MSE regressor {mse_error:.3f} (arm reach {L1 + L2})")

    targets = np.array([[1.0, 0.6], [0.6, -0.9], [1.2, 0.0]], np.float32)
    target_params = model.predict(targets, verbose=0)
    named = head.component_params(target_params)
    z = 1.6449  # 90 % two-sided normal quantile
    for target, w, mu, sd in zip(targets, *(np.asarray(named[k]) for k in
                                            ("weights", "means", "stddevs"))):
        exact = np.round(inverse(target[None].astype(np.float64))[0], 2).tolist()
        print(f"hand {np.round(target.astype(np.float64), 2).tolist()}: exact "
              f"solutions {exact}")
        for k in np.argsort(-w)[:2]:
            low, high = (mu[k] - z * sd[k]) * np.pi, (mu[k] + z * sd[k]) * np.pi
            print(f"  component weight {w[k]:.2f}: t1 in [{low[0]:.2f}, "
                  f"{high[0]:.2f}], t2 in [{low[1]:.2f}, {high[1]:.2f}] (90 %)")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "probabilistic_regression.png"
    plot(model, head, path, targets, grid=40 if args.smoke else 200)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
