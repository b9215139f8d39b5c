"""Built-in tf_keras models. Every model outputs logits (no softmax): distillation needs them, and
argmax over int8 logits is exactly the float decision up to quantization error."""

from __future__ import annotations

from typing import Any

from edgeq import tfenv
from edgeq.errors import UserInputError

ARCHITECTURES = ("teacher", "student", "student_ternary")


def build_model(arch: str, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """Build ``teacher``, ``student`` or ``student_ternary`` for images of ``input_shape`` (H, W, C).

    ``student_ternary`` is the student's topology with ternary weights (``TernaryConv2D`` /
    ``TernaryDense``, exported as EDGEQ_TERNARY_* custom ops) everywhere except the first conv and
    the logits layer, as in the ternary-network papers: with one or three input channels the first
    conv's 9–27 weights per filter carry too little to ternarize well, and the logits layer decides
    the class from few weights; together they are about 2 % of the student's weights, so keeping
    them int8 costs little size for the accuracy (digits, int8 model: 99.16 % and 98.61 % in two
    runs, against 97.77 % twice with ternary logits; 16.2–16.3 kB instead of 16.0 kB).
    """
    k = tfenv.keras()
    layers = k.layers
    h, w, _ = input_shape
    if arch not in ARCHITECTURES:
        raise UserInputError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHITECTURES)}")
    # Images larger than the 8×8 digits are downsampled first so that both models stay small.
    stride = 1 if max(h, w) <= 16 else 2
    inputs = k.Input(shape=input_shape, name="image")
    if arch == "teacher":
        x = layers.Conv2D(32, 3, strides=stride, padding="same", activation="relu")(inputs)
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        if max(h, w) > 16:
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(128, activation="relu")(x)
        x = layers.Dropout(0.3)(x)
    elif arch == "student_ternary":
        from edgeq.ops.layers import TernaryConv2D, TernaryDense

        x = layers.Conv2D(16, 3, strides=stride, padding="same", activation="relu")(inputs)
        x = TernaryConv2D(32, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        if max(h, w) > 16:
            x = TernaryConv2D(32, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = TernaryDense(64, activation="relu")(x)
    else:
        x = layers.Conv2D(16, 3, strides=stride, padding="same", activation="relu")(inputs)
        x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        if max(h, w) > 16:
            x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return k.Model(inputs, outputs, name=arch)


def count_params(model: Any) -> int:
    return int(model.count_params())
