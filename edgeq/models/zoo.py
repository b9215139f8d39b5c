"""Built-in tf_keras models. Every model outputs logits (no softmax): distillation needs them, and
argmax over int8 logits is exactly the float decision up to quantization error.

Each architecture is a plan (:func:`plan`): the list of its layers for an input size. The same plan
builds the Keras model and, without TensorFlow, tells which input sizes it can take and how much
memory training it needs — so a bad ``--image-size`` is one line before any data is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgeq import tfenv
from edgeq.data import DataShape, memory
from edgeq.errors import UserInputError

ARCHITECTURES = ("teacher", "student", "student_ternary")
DEFAULT_BATCH = 64  # FitConfig's batch size
PREDICT_BATCH = 256  # edgeq.train.core.accuracy / teacher_logits
# Float copies of the training images alive while fitting: the array and its three split parts, the
# shift-augmented training set (5× the 65 % training split) and TensorFlow's tensor copy of it.
TRAINING_DATA_COPIES = 2 + 2 * 5 * 0.65
# Per image of a training batch, each activation is held for the backward pass with its gradient.
# Measured (teacher, one epoch, RGB, peak RSS above TensorFlow's own): 358 MiB at 64² × 300 images,
# 1807 MiB at 256² × 100, 5560 MiB at 512² × 40, against estimates (model + data) of 269, 1886 and
# 4333 MiB: within 25 %, and rather under than over, so a run that fits is never refused.
ACTIVATION_COPIES = 2
# Weights, gradients and Adam's two moments.
PARAM_COPIES = 4
_IMAGE_SIZE_HINT = "pass a larger --image-size for an image folder (e.g. 32x32), or larger images in the .npz"


@dataclass(frozen=True)
class Step:
    """One layer of a plan: ``conv`` / ``ternary_conv`` (3×3, same padding), ``pool`` (2×2 max),
    ``flatten``, ``dropout``, ``dense`` / ``ternary_dense``, or ``logits``."""

    kind: str
    size: int = 0  # filters or units
    stride: int = 1


def plan(arch: str, input_shape: tuple[int, int, int]) -> list[Step]:
    """The layers of ``arch`` for images of ``input_shape`` (H, W, C)."""
    if arch not in ARCHITECTURES:
        raise UserInputError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHITECTURES)}")
    h, w, _ = input_shape
    # Images larger than the 8×8 digits are downsampled first so that both models stay small.
    big = max(h, w) > 16
    stride = 2 if big else 1
    if arch == "teacher":
        steps = [Step("conv", 32, stride), Step("conv", 64), Step("pool"), Step("conv", 64)]
        steps += [Step("pool")] if big else []
        steps += [Step("flatten"), Step("dropout"), Step("dense", 128), Step("dropout")]
    else:
        conv = "ternary_conv" if arch == "student_ternary" else "conv"
        steps = [Step("conv", 16, stride), Step(conv, 32), Step("pool")]
        steps += [Step(conv, 32), Step("pool")] if big else []
        steps += [Step("flatten"), Step("ternary_dense" if arch == "student_ternary" else "dense", 64)]
    return [*steps, Step("logits")]


def _walk(arch: str, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, str | None]:
    """(activation values per image, parameters, why the input is too small or None)."""
    h, w, c = input_shape
    acts = params = 0
    flat = 0
    for i, s in enumerate(plan(arch, input_shape)):
        if s.kind in ("conv", "ternary_conv"):
            params += 9 * c * s.size + s.size
            h, w, c = math.ceil(h / s.stride), math.ceil(w / s.stride), s.size
        elif s.kind == "pool":
            if h < 2 or w < 2:
                return acts, params, f"layer {i + 1} (2x2 max pooling) gets a {h}x{w} feature map"
            h, w = h // 2, w // 2
        elif s.kind == "flatten":
            flat = h * w * c
        elif s.kind in ("dense", "ternary_dense", "logits"):
            units = num_classes if s.kind == "logits" else s.size
            params += flat * units + units
            flat = units
        acts += flat if s.kind in ("flatten", "dense", "ternary_dense", "logits", "dropout") else h * w * c
    return acts, params, None


def smallest_input(arch: str) -> tuple[int, int]:
    """(smallest side when both sides are at most 16, smallest side when a side is over 16)."""
    small = next(n for n in range(1, 17) if _walk(arch, (n, n, 1), 2)[2] is None)
    large = next(n for n in range(1, 64) if _walk(arch, (n, max(n, 17), 1), 2)[2] is None)
    return small, large


def check_input_shape(arch: str, input_shape: tuple[int, int, int]) -> None:
    """A one-line UserInputError when ``arch`` cannot take images of ``input_shape``."""
    h, w, c = input_shape
    why = _walk(arch, input_shape, 2)[2]
    if why is None:
        return
    small, large = smallest_input(arch)
    raise UserInputError(
        f"the built-in {arch} cannot take {h}x{w} images: {why}; it needs at least {small}x{small}, "
        f"and at least {large} on each side when a side is over 16",
        _IMAGE_SIZE_HINT,
    )


def estimate_training_bytes(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch: int = DEFAULT_BATCH,
    count: int | None = None,
) -> int:
    """Memory the model itself needs to be trained (activations of a batch, weights and optimizer
    state) or evaluated (a prediction batch of up to 256 of the ``count`` images), whichever is
    larger — not counting the data."""
    acts, params, _ = _walk(arch, input_shape, num_classes)
    train = min(batch, count or batch) * acts * 4 * ACTIVATION_COPIES
    predict = min(PREDICT_BATCH, count or PREDICT_BATCH) * acts * 4
    return max(train, predict) + params * 4 * PARAM_COPIES


def check_training_fits(archs: tuple[str, ...], data: DataShape, batch: int = DEFAULT_BATCH) -> None:
    """Before any data is read: each architecture takes the data's image size, and training the
    largest of them on it fits in the available memory. One line, exit 2, otherwise.

    >>> check_training_fits(("teacher", "student"), DataOptions("photos", (4000, 4000)).peek())
    """
    num_classes = data.num_classes
    for arch in archs:
        check_input_shape(arch, data.input_shape)
    model_bytes = max(
        estimate_training_bytes(a, data.input_shape, num_classes, batch, data.count) for a in archs
    )
    h, w, c = data.input_shape
    memory.require(
        model_bytes + data.float32_bytes * TRAINING_DATA_COPIES,
        f"training the built-in {' and '.join(archs)} on {data.count} images of {h}x{w}x{c}",
        "pass a smaller --image-size for an image folder (e.g. 64x64), or use smaller images",
    )


def build_model(arch: str, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """Build ``teacher``, ``student`` or ``student_ternary`` for images of ``input_shape`` (H, W, C).

    ``student_ternary`` is the student's topology with ternary weights (``TernaryConv2D`` /
    ``TernaryDense``, exported as EDGEQ_TERNARY_* custom ops) everywhere except the first conv and
    the logits layer, as in the ternary-network papers: with one or three input channels the first
    conv's 9–27 weights per filter carry too little to ternarize well, and the logits layer decides
    the class from few weights; together they are about 2 % of the student's weights, so keeping
    them int8 costs little size for the accuracy (digits, int8 model: 99.16 % and 98.61 % in two
    runs, against 97.77 % twice with ternary logits; 16.2–16.3 kB instead of 16.0 kB).

    An input the architecture cannot take, or a model too large to train here, is a UserInputError.
    """
    steps = plan(arch, input_shape)
    check_input_shape(arch, input_shape)
    h, w, c = input_shape
    memory.require(
        estimate_training_bytes(arch, input_shape, num_classes),
        f"training the built-in {arch} on {h}x{w}x{c} images",
        "pass a smaller --image-size for an image folder (e.g. 64x64), or use smaller images",
    )
    k = tfenv.keras()
    layers = k.layers
    if arch == "student_ternary":
        from edgeq.ops.layers import TernaryConv2D, TernaryDense
    inputs = k.Input(shape=input_shape, name="image")
    x = inputs
    for s in steps:
        if s.kind == "conv":
            x = layers.Conv2D(s.size, 3, strides=s.stride, padding="same", activation="relu")(x)
        elif s.kind == "ternary_conv":
            x = TernaryConv2D(s.size, 3, padding="same", activation="relu")(x)
        elif s.kind == "pool":
            x = layers.MaxPooling2D(2)(x)
        elif s.kind == "flatten":
            x = layers.Flatten()(x)
        elif s.kind == "dropout":
            x = layers.Dropout(0.3)(x)
        elif s.kind == "dense":
            x = layers.Dense(s.size, activation="relu")(x)
        elif s.kind == "ternary_dense":
            x = TernaryDense(s.size, activation="relu")(x)
        else:
            x = layers.Dense(num_classes, name="logits")(x)
    return k.Model(inputs, x, name=arch)


def count_params(model: Any) -> int:
    return int(model.count_params())
