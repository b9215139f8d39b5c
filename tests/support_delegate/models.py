"""Small models for the Edge TPU coverage tests, converted by edgeq's own converter (full int8).

Each builder writes ``dest`` and returns it. LeakyReLU is the unsupported op: TFLite runs it in int8
(LEAKY_RELU) and it is not in the Edge TPU's supported-operations table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _keras() -> Any:
    from edgeq.tfenv import keras

    return keras()


def _int8(model: Any, calib: np.ndarray, dest: Path) -> Path:
    from edgeq.export.convert import to_int8_tflite

    dest.write_bytes(to_int8_tflite(model, calib))
    return dest


def _calib(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def student(dest: Path) -> Path:
    """The pipeline's student model (edgeq.models.build_model) for 32×32×1 images, 10 classes."""
    from edgeq.models import build_model

    k = _keras()
    k.utils.set_random_seed(0)
    return _int8(build_model("student", (32, 32, 1), 10), _calib((32, 32, 1), 16), dest)


def leaky(where: str) -> Callable[[Path], Path]:
    """A small CNN with one LEAKY_RELU at the ``start``, in the ``middle`` or at the ``end``."""

    def build(dest: Path) -> Path:
        k = _keras()
        k.utils.set_random_seed(0)
        L = k.layers
        x = inp = k.Input((12, 12, 1))
        if where == "start":
            x = L.LeakyReLU(0.2)(x)
        x = L.Conv2D(4, 3, activation="relu")(x)
        if where == "middle":
            x = L.LeakyReLU(0.2)(x)
        x = L.Conv2D(8, 3, activation="relu")(x)
        x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        x = L.Dense(5)(x)
        if where == "end":
            x = L.LeakyReLU(0.2)(x)
        return _int8(k.Model(inp, x), _calib((12, 12, 1)), dest)

    return build


def float_model(dest: Path) -> Path:
    """The same small CNN converted without quantization (float32 throughout)."""
    from edgeq.export.convert import to_float_tflite

    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers
    model = k.Sequential([k.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(3)])
    dest.write_bytes(to_float_tflite(model))
    return dest


def dynamic(dest: Path) -> Path:
    """A sequence model whose length is unknown (Input((None, 8))): -1 beyond the batch dimension."""
    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers
    inp = k.Input((None, 8))
    x = L.Dense(4, activation="relu")(inp)
    x = L.Dense(2)(x)
    return _int8(k.Model(inp, x), _calib((5, 8)), dest)


def rank5(dest: Path) -> Path:
    """A conv, then a reshape to 5-D with an outer dimension of 2 and a max over that dimension
    (batch fixed at 1, so the reshape has a constant shape)."""
    from edgeq.tfenv import tensorflow

    tf = tensorflow()
    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers
    inp = k.Input((4, 4, 8), batch_size=1)
    x = L.Conv2D(8, 1, activation="relu")(inp)
    x = L.Reshape((2, 2, 4, 8))(x)
    x = L.Lambda(lambda t: tf.reduce_max(t, axis=1))(x)
    x = L.Flatten()(x)
    x = L.Dense(3)(x)
    return _int8(k.Model(inp, x), _calib((4, 4, 8)), dest)


def big_softmax(dest: Path, classes: int = 16001) -> Path:
    """A dense layer to ``classes`` outputs and a Softmax over all of them (> 16,000 elements)."""
    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers
    model = k.Sequential([k.Input((4,)), L.Dense(8, activation="relu"), L.Dense(classes), L.Softmax()])
    return _int8(model, _calib((4,)), dest)


def while_loop(dest: Path) -> Path:
    """A model with a tf.while_loop: the converter writes a WHILE op and its cond/body subgraphs."""
    from edgeq.tfenv import tensorflow

    tf = tensorflow()
    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers

    class Repeat(L.Layer):  # type: ignore[name-defined]
        def call(self, x: Any) -> Any:
            i0 = tf.constant(0)
            _, y = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, tf.nn.relu(v * 0.5 + 0.1)), [i0, x])
            return y

    inp = k.Input((6,))
    x = L.Dense(6, activation="relu")(inp)
    x = Repeat()(x)
    x = L.Dense(2)(x)
    return _int8(k.Model(inp, x), _calib((6,)), dest)
