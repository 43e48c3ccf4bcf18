"""keras_gmm.GMMConv2D."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm.layers import gmm_conv2d
from tests import layer_checks

COV_TYPES = ("diag", "full", "spherical")


def _images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _reference_conv(layer, x):
    """``tf.nn.conv2d`` with the layer's ``kernel`` property, plus its bias."""
    fmt = "NHWC" if layer.data_format == "channels_last" else "NCHW"
    y = tf.nn.conv2d(
        x,
        layer.kernel,
        strides=layer.strides,
        padding=layer.padding.upper(),
        data_format=fmt,
        dilations=layer.dilation_rate,
    )
    if layer.use_bias:
        bias = layer.bias if fmt == "NHWC" else tf.reshape(layer.bias, (-1, 1, 1))
        y = y + bias
    return y.numpy()


# ----------------------------------------------------- the convolution itself
@pytest.mark.parametrize(
    "conv_kwargs",
    [
        dict(strides=1, padding="valid"),
        dict(strides=2, padding="same"),
        dict(strides=(2, 1), padding="valid"),
        dict(dilation_rate=2, padding="same"),
        dict(dilation_rate=(1, 3), padding="valid"),
    ],
    ids=["valid", "stride2-same", "stride21-valid", "dilation2-same",
         "dilation13-valid"],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_output_equals_tf_nn_conv2d_with_kernel_property(conv_kwargs, data_format):
    layer = keras_gmm.GMMConv2D(
        5, (3, 4), num_components=3, data_format=data_format, **conv_kwargs
    )
    shape = (2, 11, 13, 3) if data_format == "channels_last" else (2, 3, 11, 13)
    x = _images(shape)
    # Move the bias and bumps away from their initial values.
    layer.build(shape)
    layer.bias.assign(np.linspace(-1, 1, 5).astype(np.float32))
    layer.locs.assign(layer.locs + 0.3)
    out = layer(x).numpy()
    np.testing.assert_allclose(out, _reference_conv(layer, x), rtol=1e-5, atol=1e-5)
    assert out.shape == layer.compute_output_shape(shape)
    conv2d = keras.layers.Conv2D(
        5, (3, 4), data_format=data_format, **conv_kwargs
    )
    assert layer.compute_output_shape(shape) == conv2d.compute_output_shape(shape)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("share_gaussians", [True, False])
def test_kernel_is_amplitudes_times_normalised_bumps(covariance_type, share_gaussians):
    layer = keras_gmm.GMMConv2D(
        4, 5, num_components=3, covariance_type=covariance_type,
        share_gaussians=share_gaussians, activation="relu",
    )
    x = _images((2, 9, 9, 2))
    rng = np.random.default_rng(1)
    layer.build(x.shape)
    for w in (layer.locs, layer.scales):
        w.assign(w + rng.normal(scale=0.3, size=w.shape).astype(np.float32))
    bumps = layer.bumps.numpy()
    k = 3
    if share_gaussians:
        assert bumps.shape == (5, 5, k)
        expected = np.einsum("uvk,kio->uvio", bumps, layer.amplitudes.numpy())
    else:
        assert bumps.shape == (5, 5, 2, 4, k)
        expected = np.einsum("uviok,kio->uvio", bumps, layer.amplitudes.numpy())
    np.testing.assert_allclose(bumps.sum(axis=(0, 1)), 1.0, rtol=1e-5)
    assert np.all(bumps >= 0)
    np.testing.assert_allclose(layer.kernel.numpy(), expected, rtol=1e-5, atol=1e-7)
    # Each bump is the grid-normalised Gaussian density with the layer's
    # means and covariances (checked against a direct NumPy evaluation).
    means = layer.means.numpy().reshape(-1, k, 2)
    covs = layer.covariances.numpy().reshape(-1, k, 2, 2)
    flat = bumps.reshape(25, -1, k)
    offsets = np.stack(np.meshgrid(np.arange(5) - 2.0, np.arange(5) - 2.0,
                                   indexing="ij"), -1).reshape(25, 2)
    for pair in (0, means.shape[0] - 1):
        for j in range(k):
            diff = offsets - means[pair, j]
            mahal = np.einsum("pi,ij,pj->p", diff, np.linalg.inv(covs[pair, j]), diff)
            density = np.exp(-0.5 * (mahal - mahal.min()))
            np.testing.assert_allclose(
                flat[:, pair, j], density / density.sum(), rtol=1e-4, atol=1e-7
            )
    np.testing.assert_allclose(
        layer(x).numpy(), np.maximum(_reference_conv(layer, x), 0), rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_represents_any_dense_kernel(covariance_type):
    """K = kh * kw bumps on the grid points with tiny scales: the amplitudes are
    the kernel's taps, so the layer reproduces any Conv2D."""
    kh, kw, cin, cout = 3, 5, 3, 4
    x = _images((2, 10, 12, cin), seed=2)
    conv2d = keras.layers.Conv2D(cout, (kh, kw), padding="same",
                                 bias_initializer="random_normal")
    expected = conv2d(x).numpy()
    layer = keras_gmm.GMMConv2D(
        cout, (kh, kw), num_components=kh * kw, covariance_type=covariance_type,
        padding="same", min_scale=0.05,
    )
    layer.build(x.shape)
    # Means on the grid points (row-major), scales at their floor.
    offsets = np.stack(np.meshgrid(np.arange(kh) - 1.0, np.arange(kw) - 2.0,
                                   indexing="ij"), -1).reshape(-1, 2)
    layer.locs.assign(np.arctanh(offsets / (np.array([kh, kw]) / 2)).astype(np.float32))
    raw = np.full(layer.scales.shape, -30.0, np.float32)
    if covariance_type == "full":
        raw[:, 2] = 0.0  # no correlation
    layer.scales.assign(raw)
    layer.amplitudes.assign(conv2d.kernel.numpy().reshape(kh * kw, cin, cout))
    layer.bias.assign(conv2d.bias.numpy())
    np.testing.assert_allclose(layer.means.numpy(), offsets, atol=1e-5)
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(layer.kernel.numpy(), conv2d.kernel.numpy(), atol=1e-6)


# ----------------------------------------------------------- parameter count
@pytest.mark.parametrize(
    "covariance_type, geometry", [("diag", 4), ("full", 5), ("spherical", 3)]
)
def test_parameter_count(covariance_type, geometry):
    k, cin, cout = 4, 6, 7
    assert gmm_conv2d.num_gaussian_params(covariance_type) == geometry
    shared = keras_gmm.GMMConv2D(cout, 5, k, covariance_type)
    shared.build((None, 8, 8, cin))
    assert shared.count_params() == k * cin * cout + k * geometry + cout
    per_pair = keras_gmm.GMMConv2D(cout, 5, k, covariance_type, share_gaussians=False,
                                   use_bias=False)
    per_pair.build((None, 8, 8, cin))
    assert per_pair.count_params() == k * cin * cout * (1 + geometry)
    assert shared.means.shape == (k, 2)
    assert per_pair.means.shape == (cin, cout, k, 2)
    assert per_pair.stddevs.shape == (cin, cout, k, 2)
    assert per_pair.covariances.shape == (cin, cout, k, 2, 2)
    # Fewer parameters than the Conv2D kernel when K * (in*out) << 25 * in*out.
    conv2d = keras.layers.Conv2D(cout, 5)
    conv2d.build((None, 8, 8, cin))
    assert shared.count_params() < conv2d.count_params() / 4


def test_default_initialisation():
    """Sharp bumps start on a lattice over the window; the initial dense kernel
    has the spread of Conv2D's Glorot-uniform kernel."""
    layer = keras_gmm.GMMConv2D(64, 5, num_components=4)
    layer.build((None, 16, 16, 32))
    np.testing.assert_allclose(
        layer.means.numpy(),
        [[-1.25, -1.25], [-1.25, 1.25], [1.25, -1.25], [1.25, 1.25]],
        atol=1e-5,
    )
    np.testing.assert_allclose(layer.stddevs.numpy(), 0.5, atol=1e-5)
    glorot_std = np.sqrt(2.0 / (25 * (32 + 64)))
    assert np.std(layer.kernel.numpy()) == pytest.approx(glorot_std, rel=0.15)
    wide = keras_gmm.GMMConv2D(64, 5, num_components=4, covariance_type="full",
                               initial_scale=1.5, share_gaussians=False)
    wide.build((None, 16, 16, 32))
    np.testing.assert_allclose(wide.stddevs.numpy(), 1.5, atol=1e-5)
    np.testing.assert_allclose(wide.covariances.numpy()[..., 0, 1], 0.0, atol=1e-6)
    assert np.std(wide.kernel.numpy()) == pytest.approx(glorot_std, rel=0.15)
    nine = keras_gmm.GMMConv2D(2, 3, num_components=9)
    nine.build((None, 5, 5, 1))
    grid = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij"), -1)
    np.testing.assert_allclose(nine.means.numpy(), grid.reshape(9, 2), atol=1e-5)


# --------------------------------------------------------- Keras layer checks
def make_model(covariance_type="diag", share_gaussians=True):
    return keras.Sequential(
        [
            keras.Input((8, 8, 2), name="image"),
            keras_gmm.GMMConv2D(
                4, 3, num_components=3, covariance_type=covariance_type,
                share_gaussians=share_gaussians, padding="same",
                activation="relu", name="gmm_conv",
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
            # Float32 outputs under mixed precision (the usual Keras recipe).
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )


@pytest.mark.parametrize(
    "covariance_type, share_gaussians, export",
    [("diag", True, True), ("full", False, True), ("spherical", True, False)],
)
def test_keras_layer_checks(covariance_type, share_gaussians, export, tmp_path):
    x = _images((16, 8, 8, 2))
    y = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    layer_checks.check_layer(
        lambda: make_model(covariance_type, share_gaussians),
        lambda m: m.get_layer("gmm_conv"),
        x,
        y,
        lambda model: "mse",
        tmp_path,
        export_check=layer_checks.check_export_reload if export else None,
    )


def test_config_round_trip_keeps_every_argument():
    layer = keras_gmm.GMMConv2D(
        3, (3, 5), num_components=2, covariance_type="full", share_gaussians=False,
        strides=(1, 2), padding="SAME", data_format="channels_first",
        activation="tanh", use_bias=False, amplitude_initializer="he_normal",
        amplitude_regularizer=keras.regularizers.L2(1e-3), min_scale=0.2,
        name="conv",
    )
    config = layer.get_config()
    assert config["padding"] == "same" and config["kernel_size"] == (3, 5)
    assert config["strides"] == (1, 2) and config["min_scale"] == 0.2
    clone = keras_gmm.GMMConv2D.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.amplitude_regularizer, keras.regularizers.L2)
    assert isinstance(clone.amplitude_initializer, keras.initializers.HeNormal)
    out = clone(_images((1, 2, 8, 8)))
    assert out.shape == (1, 3, 8, 4) and len(clone.losses) == 1
    assert clone.kernel.shape == (3, 5, 2, 3)


def test_mixed_precision_dtypes():
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = keras_gmm.GMMConv2D(4, 3, num_components=2, covariance_type="full")
    out = layer(_images((2, 6, 6, 3)))
    # Like Conv2D: compute dtype outputs, float32 variables and kernel math.
    assert out.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)
    assert layer.kernel.dtype == tf.float32


# ------------------------------------------------------------------ training
def test_gradients_reach_every_parameter():
    layer = keras_gmm.GMMConv2D(3, 5, num_components=2, covariance_type="full",
                                share_gaussians=False)
    x = _images((2, 9, 9, 2))
    layer.build(x.shape)
    target = _images((2, 5, 5, 3), seed=5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x) - target))
    grads = tape.gradient(loss, layer.trainable_weights)
    names = [w.name for w in layer.trainable_weights]
    assert names == ["amplitudes", "locs", "scales", "bias"]
    for name, grad in zip(names, grads):
        assert grad is not None, name
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-6, name


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_means_move_toward_target_and_stay_inside_window(covariance_type):
    """One bump learns a kernel whose only tap is the top-left corner: its mean
    moves there with a large learning rate but never leaves the window."""
    k = 5
    target = np.zeros((k, k, 1, 1), np.float32)
    target[0, 0] = 1.0
    x = _images((8, 12, 12, 1), seed=3)
    y = tf.nn.conv2d(x, target, 1, "VALID").numpy()
    # A wide initial bump, so that the corner tap is within its reach.
    layer = keras_gmm.GMMConv2D(1, k, num_components=1,
                                covariance_type=covariance_type, use_bias=False,
                                initial_scale=1.5)
    model = keras.Sequential([keras.Input((12, 12, 1)), layer])
    model.compile(keras.optimizers.Adam(0.3), "mse", jit_compile=True)
    start = layer.means.numpy().copy()
    np.testing.assert_allclose(start, 0.0, atol=1e-6)
    for _ in range(15):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        means = layer.means.numpy()
        assert np.all(np.abs(means) < k / 2), means
        assert np.all(np.isfinite(layer.stddevs.numpy()))
    assert np.all(means < -1.0), means  # toward the (-2, -2) tap
    assert model.evaluate(x, y, verbose=0) < 0.1 * np.mean(y**2)


def test_geometry_gain_keeps_the_initial_kernel_and_speeds_up_the_geometry():
    x = _images((4, 9, 9, 2), seed=4)
    target = _images((4, 5, 5, 3), seed=6)
    moved = {}
    for gain in (1.0, 10.0):
        layer = keras_gmm.GMMConv2D(3, 5, num_components=4, geometry_gain=gain,
                                    amplitude_initializer="ones")
        layer.build(x.shape)
        if gain == 1.0:
            kernel = layer.kernel.numpy()
        else:
            np.testing.assert_allclose(layer.kernel.numpy(), kernel, rtol=1e-5)
        before = layer.means.numpy()
        optimizer = keras.optimizers.Adam(1e-3)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x) - target))
        grads = tape.gradient(loss, layer.trainable_weights)
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
        moved[gain] = np.abs(layer.means.numpy() - before).max()
    # One Adam step moves each stored parameter by about the learning rate.
    assert moved[10.0] > 5 * moved[1.0] > 0


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(filters=2, kernel_size=0), r"kernel_size.*0"),
        (dict(filters=2, kernel_size=(3, 0)), r"kernel_size.*\(3, 0\)"),
        (dict(filters=2, kernel_size=(3, 3, 3)), r"kernel_size.*tuple of 2"),
        (dict(filters=2, kernel_size=2.5), r"kernel_size.*2.5"),
        (dict(filters=2, kernel_size=3, num_components=0), r"num_components.*0"),
        (dict(filters=2, kernel_size=3, num_components=-1), r"num_components.*-1"),
        (dict(filters=2, kernel_size=3, covariance_type="tied"),
         r"covariance_type.*tied"),
        (dict(filters=2, kernel_size=3, covariance_type="foo"),
         r"covariance_type.*foo"),
        (dict(filters=0, kernel_size=3), r"filters.*0"),
        (dict(filters=2, kernel_size=3, padding="causal"), r"padding.*causal"),
        (dict(filters=2, kernel_size=3, data_format="NHWC"), r"data_format.*NHWC"),
        (dict(filters=2, kernel_size=3, strides=0), r"strides.*0"),
        (dict(filters=2, kernel_size=3, strides=2, dilation_rate=2),
         r"strides.*dilation"),
        (dict(filters=2, kernel_size=3, min_scale=0), r"min_scale.*0"),
        (dict(filters=2, kernel_size=3, initial_scale=-1), r"initial_scale.*-1"),
        (dict(filters=2, kernel_size=3, initial_scale=0.1),
         r"initial_scale.*exceed"),
        (dict(filters=2, kernel_size=3, geometry_gain=0), r"geometry_gain.*0"),
        (dict(filters=2, kernel_size=3, share_gaussians="yes"),
         r"share_gaussians.*yes"),
        (dict(filters=2, kernel_size=True), r"kernel_size.*True"),
        (dict(filters=2.0, kernel_size=3), r"filters.*2.0"),
        (dict(filters=2, kernel_size=3, padding=None), r"padding.*None"),
        (dict(filters=2, kernel_size=3, use_bias="no"), r"use_bias.*'no'"),
        (dict(filters=2, kernel_size=3, min_scale=float("nan")), r"min_scale.*nan"),
        (dict(filters=2, kernel_size=3, initial_scale=float("inf")),
         r"initial_scale.*inf"),
        (dict(filters=2, kernel_size=3, geometry_gain=float("nan")),
         r"geometry_gain.*nan"),
        (dict(filters=2, kernel_size=3, dilation_rate=(1, -2)),
         r"dilation_rate.*\(1, -2\)"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GMMConv2D(**kwargs)


@pytest.mark.parametrize("shape", [(4, 8, 3), (2, 4, 8, 8, 3), (8,)])
def test_input_rank_not_4_is_a_clear_error(shape):
    layer = keras_gmm.GMMConv2D(2, 3)
    with pytest.raises(ValueError, match=rf"4-D inputs.*rank {len(shape)}"):
        layer(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="4-D inputs"):
        keras.Sequential([keras.Input(shape[1:]), keras_gmm.GMMConv2D(2, 3)])


@pytest.mark.parametrize(
    "conv_kwargs, shape",
    [
        (dict(kernel_size=5), (1, 3, 3, 2)),
        (dict(kernel_size=(2, 6)), (1, 8, 5, 2)),
        (dict(kernel_size=3, dilation_rate=2), (1, 4, 9, 2)),
        (dict(kernel_size=3, data_format="channels_first"), (1, 2, 2, 7)),
    ],
)
def test_kernel_larger_than_input_with_valid_padding_raises(conv_kwargs, shape):
    """As keras.layers.Conv2D: eagerly and at build, not a wrong-shaped output."""
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="Computed output size would be zero or negative"):
        keras.layers.Conv2D(2, **conv_kwargs)(x)  # the peer refuses too
    with pytest.raises(ValueError, match="output size would be zero or negative.*padding='same'"):
        keras_gmm.GMMConv2D(2, **conv_kwargs)(x)
    with pytest.raises(ValueError, match="output size would be zero or negative"):
        keras.Sequential([keras.Input(shape[1:]), keras_gmm.GMMConv2D(2, **conv_kwargs)])
    layer = keras_gmm.GMMConv2D(2, **conv_kwargs)
    with pytest.raises(ValueError, match="output size would be zero or negative"):
        layer.compute_output_shape(shape)
    # padding="same" is fine with any input size (as Conv2D).
    same = keras_gmm.GMMConv2D(2, padding="same", **conv_kwargs)
    assert tuple(same(x).shape) == tuple(
        keras.layers.Conv2D(2, padding="same", **conv_kwargs).compute_output_shape(shape)
    )


def test_unknown_spatial_size_is_checked_in_graph():
    layer = keras_gmm.GMMConv2D(2, 3)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 2])])
    assert fn(tf.zeros((1, 3, 4, 2))).shape == (1, 1, 2, 2)  # exactly the kernel
    with pytest.raises(tf.errors.InvalidArgumentError, match="spatial size must be >= 3"):
        fn(tf.zeros((1, 2, 5, 2)))


def test_supported_covariance_types_and_deprecated_alias():
    assert gmm_conv2d.SUPPORTED_COVARIANCE_TYPES == COV_TYPES
    with pytest.warns(DeprecationWarning, match="SUPPORTED_COVARIANCE_TYPES"):
        assert gmm_conv2d.COVARIANCE_TYPES == COV_TYPES
    assert [gmm_conv2d.num_gaussian_params(t) for t in COV_TYPES] == [4, 5, 3]
    with pytest.raises(ValueError, match="covariance_type.*'tied'"):
        gmm_conv2d.num_gaussian_params("tied")


def test_unknown_channels_and_wrong_channel_count():
    with pytest.raises(ValueError, match="channel axis.*known"):
        keras.Sequential([keras.Input((8, 8, None)), keras_gmm.GMMConv2D(2, 3)])
    layer = keras_gmm.GMMConv2D(2, 3)
    layer(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="built for 3 input channels.*4 channels"):
        layer(np.zeros((1, 5, 5, 4), np.float32))


# ------------------------------------------------- the zoo model built on it
def test_zoo_gmmconv_digits_structure_and_recorded_comparison():
    import keras_gmm.zoo
    from keras_gmm.zoo import gmmconv_digits as recipe

    model = keras_gmm.zoo.load("gmmconv_digits")
    convs = [layer for layer in model.layers if "conv" in layer.name]
    assert [type(layer) for layer in convs] == [keras_gmm.GMMConv2D] * 2
    assert isinstance(model.layers[1], keras.layers.Reshape)  # x [n, 64] goes in
    x = keras_gmm.zoo.example_inputs("gmmconv_digits", 16)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (16, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    meta = keras_gmm.zoo.info("gmmconv_digits")
    comparison = meta["training"]["comparison"]
    assert len(comparison["seeds"]) == 3
    ours, peer = comparison["GMMConv2D"], comparison["Conv2D"]
    assert ours["parameters"]["convolution"] == recipe.conv_parameters(model)
    assert peer["parameters"]["convolution"] == 52096
    # The target: within 1 point of Conv2D with >= 3x fewer parameters.
    assert peer["parameters"]["convolution"] >= 3 * ours["parameters"]["convolution"]
    assert ours["accuracy_mean"] >= peer["accuracy_mean"] - 0.01
    recorded = keras_gmm.zoo.recorded_metrics("gmmconv_digits")["accuracy"]
    seed = str(meta["training"]["seed"])
    assert ours["per_seed"][seed]["accuracy"] == pytest.approx(recorded, abs=1e-12)
    assert meta["metrics"]["accuracy"]["reference"]["value"] == pytest.approx(
        peer["per_seed"][seed]["accuracy"], abs=1e-12
    )


def test_zoo_gmmconv_digits_train_tiny(tmp_path):
    import keras_gmm.zoo

    meta = keras_gmm.zoo.train(
        "gmmconv_digits", output_dir=tmp_path / "gmmconv_digits", epochs=2, seed=1,
        comparison_seeds=1,
    )
    assert "--epochs 2 --seed 1" in meta["train_command"]
    assert meta["training"]["comparison"]["seeds"] == [1]
    model = keras_gmm.zoo.load("gmmconv_digits", root=tmp_path, sha256=meta["sha256"])
    rows = keras_gmm.zoo.check_metrics(
        "gmmconv_digits", keras_gmm.zoo.evaluate("gmmconv_digits", model),
        root=tmp_path,
    )
    assert all(row["ok"] for row in rows)
    # Two epochs already classify far better than chance (0.1).
    assert meta["metrics"]["accuracy"]["value"] > 0.5
    with pytest.raises(ValueError, match="epochs"):
        keras_gmm.zoo.train("gmmconv_digits", output_dir=tmp_path / "bad", epochs=0)
