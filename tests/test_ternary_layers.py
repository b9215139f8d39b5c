"""TernaryDense / TernaryConv2D: forward ternarization, straight-through gradient, serialization, and
the QAT → int8 → lossless rewrite → LiteRT path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq import tfenv


@pytest.fixture(scope="module")
def lay() -> Any:
    from edgeq.ops import layers

    return layers


def _ternary_numpy(w: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    a = np.abs(w)
    delta = 0.7 * a.mean(axis=axes, keepdims=True)
    mask = a > delta
    alpha = (a * mask).sum(axis=axes, keepdims=True) / np.maximum(mask.sum(axis=axes, keepdims=True), 1)
    return alpha * np.sign(w) * mask


def test_dense_forward_uses_the_ternarized_kernel(lay: Any) -> None:
    tf = tfenv.tensorflow()
    layer = lay.TernaryDense(5, activation="relu")
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    layer(x)
    w = layer.kernel.numpy()
    want_w = _ternary_numpy(w, (0,))
    np.testing.assert_allclose(layer.ternary_kernel().numpy(), want_w, rtol=1e-6)
    # Per output unit exactly three values {−α, 0, +α}.
    for o in range(5):
        assert len(np.unique(np.round(np.abs(want_w[:, o]), 6))) <= 2
    np.testing.assert_allclose(
        layer(x).numpy(), np.maximum(x @ want_w + layer.bias.numpy(), 0), rtol=1e-5, atol=1e-6
    )
    assert tf.is_tensor(layer(x))


def test_dense_gradient_is_straight_through(lay: Any) -> None:
    tf = tfenv.tensorflow()
    layer = lay.TernaryDense(4, use_bias=False)
    x = tf.constant(np.random.default_rng(1).normal(size=(6, 9)).astype(np.float32))
    g = tf.constant(np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32))
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * g)
    grad = tape.gradient(loss, layer.kernel).numpy()
    # ∂L/∂W = ∂L/∂Ŵ = xᵀ g, whatever the ternarization did.
    np.testing.assert_allclose(grad, x.numpy().T @ g.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_forward_and_gradient(lay: Any) -> None:
    tf = tfenv.tensorflow()
    layer = lay.TernaryConv2D(3, 3, strides=2, padding="same")
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 7, 7, 4)).astype(np.float32))
    layer(x)
    w_t = _ternary_numpy(layer.kernel.numpy(), (0, 1, 2)).astype(np.float32)
    np.testing.assert_allclose(layer.ternary_kernel().numpy(), w_t, rtol=1e-6)
    want = tf.nn.conv2d(x, w_t, strides=2, padding="SAME") + layer.bias
    np.testing.assert_allclose(layer(x).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    g = tf.ones_like(want)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * g)
    grad = tape.gradient(loss, layer.kernel)
    w_var = tf.Variable(w_t)
    with tf.GradientTape() as tape2:
        loss2 = tf.reduce_sum((tf.nn.conv2d(x, w_var, strides=2, padding="SAME") + layer.bias) * g)
    np.testing.assert_allclose(grad.numpy(), tape2.gradient(loss2, w_var).numpy(), rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_save_load(lay: Any, tmp_path: Path) -> None:
    k = tfenv.keras()
    d = lay.TernaryDense(3, threshold_factor=0.6, activation="relu", name="td")
    c = lay.TernaryConv2D(2, (3, 2), strides=(1, 2), padding="same", name="tc")
    for layer in (d, c):
        cfg = layer.get_config()
        again = type(layer).from_config(cfg)
        assert again.get_config() == cfg
    assert d.get_config()["threshold_factor"] == 0.6
    inp = k.Input((6, 6, 1))
    model = k.Model(inp, d(k.layers.Flatten()(c(inp))))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = lay.load_ternary_model(path)
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert isinstance(loaded.get_layer("td"), lay.TernaryDense)


@pytest.fixture(scope="module")
def qat_export(lay: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small ternary student: float fit, QAT fit, int8 conversion, rewrite."""
    from edgeq.export.convert import to_int8_tflite
    from edgeq.ops import rewrite

    k = tfenv.keras()
    tfenv.set_seed(0)
    inp = k.Input((8, 8, 1))
    x = lay.TernaryConv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.MaxPooling2D(2)(x)
    x = k.layers.Flatten()(x)
    x = lay.TernaryDense(16, activation="relu")(x)
    model = k.Model(inp, lay.TernaryDense(10)(x))
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    ys = rng.integers(0, 10, 96)
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=k.optimizers.Adam(1e-2), loss=loss)
    model.fit(xs, ys, epochs=1, verbose=0)
    qat = lay.quantize_ternary_model(model)
    qat.compile(optimizer=k.optimizers.Adam(1e-3), loss=loss)
    qat.fit(xs, ys, epochs=1, verbose=0)
    out = tmp_path_factory.mktemp("qat")
    qat.save(out / "qat.h5")
    int8 = to_int8_tflite(qat, xs)
    ternary, done = rewrite.to_ternary_ops(int8)
    (out / "int8.tflite").write_bytes(int8)
    (out / "ternary.tflite").write_bytes(ternary)
    return {"qat": qat, "int8": int8, "ternary": ternary, "done": done, "dir": out, "xs": xs}


def test_qat_model_reloads(lay: Any, qat_export: dict[str, Any]) -> None:
    loaded = lay.load_ternary_model(qat_export["dir"] / "qat.h5")
    xs = qat_export["xs"][:4]
    np.testing.assert_allclose(
        loaded.predict(xs, verbose=0), qat_export["qat"].predict(xs, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_trained_ternary_layers_export_losslessly(qat_export: dict[str, Any]) -> None:
    done = qat_export["done"]
    assert [d.op for d in done] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC", "EDGEQ_TERNARY_FC"]
    assert all(d.lossless for d in done), done


def test_custom_op_model_agrees_with_builtin_int8_model(qat_export: dict[str, Any]) -> None:
    """Same ternary weights, two runtimes paths: builtin int8 ops (interpreter) and the custom ops
    through LiteRT. They differ only by requantization rounding (XNNPACK requantizes builtin ops in
    fp32, the custom op with gemmlowp's fixed point; bias and multiplier are rescaled from the int8
    weight scale to α), which compounds over the three layers to a few LSB at most."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.ops.build import build_library
    from edgeq.runner.native import LiteRtSession

    interp = Interpreter(model_content=qat_export["int8"], num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    diffs = []
    with LiteRtSession(build_library(), qat_export["dir"] / "ternary.tflite") as s:
        for x in qat_export["xs"][:16]:
            xq = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)[None]
            interp.set_tensor(inp["index"], xq)
            interp.invoke()
            (got,), _ = s.run([xq.tobytes()])
            diffs.append(
                np.abs(
                    np.frombuffer(got, np.int8).astype(int)
                    - interp.get_tensor(out["index"]).reshape(-1).astype(int)
                )
            )
    d = np.concatenate(diffs)
    assert d.max() <= 3 and d.mean() < 0.75, np.bincount(d)
