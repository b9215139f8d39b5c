"""A tiny full-int8 model (8×8×1 in, 3 logits out) built with edgeq's own converter, once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def build_tiny_int8(dest: Path, seed: int = 0) -> Path:
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(seed)
    model = k.Sequential(
        [
            k.layers.Input((8, 8, 1)),
            k.layers.Conv2D(4, 3, activation="relu"),
            k.layers.GlobalAveragePooling2D(),
            k.layers.Dense(3),
        ]
    )
    calib = np.random.default_rng(seed).uniform(0.0, 1.0, (8, 8, 8, 1)).astype(np.float32)
    dest.write_bytes(to_int8_tflite(model, calib))
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_int8(tmp_path_factory.mktemp("tiny-model") / "tiny_int8.tflite")
