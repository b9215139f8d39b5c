"""Keras → TFLite: a float reference and a full-integer model (int8 tensors end to end)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeq import tfenv
from edgeq.errors import UserInputError

REPRESENTATIVE_SAMPLES = 256


def _representative(x: np.ndarray, samples: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))[: min(samples, len(x))]

    def gen() -> Iterator[list[np.ndarray]]:
        for i in idx:
            yield [x[i : i + 1].astype(np.float32)]

    return gen


def _convert(converter: Any, what: str) -> bytes:
    try:
        with tfenv.quiet_native():
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError and assorted others
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"the TFLite converter failed on the {what} model: {first}",
            "use ops that TFLite supports as int8 builtins (see 'edgeq inspect' of a working model)",
        ) from exc


def to_float_tflite(model: Any) -> bytes:
    """The float32 TFLite model, no optimizations: the size baseline."""
    tf = tfenv.tensorflow()
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model), "float")


def to_int8_tflite(model: Any, representative_x: np.ndarray, *, seed: int = 0) -> bytes:
    """Full-integer conversion: calibrated on ``representative_x`` (training data), int8 builtins only,
    int8 input and output. Works for a float model (PTQ) and for a tfmot QAT model alike."""
    tf = tfenv.tensorflow()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(representative_x, REPRESENTATIVE_SAMPLES, seed)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return _convert(conv, "int8")
