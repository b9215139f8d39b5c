"""Train a float teacher, distill it into a student, and fine-tune the student with QAT."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq import tfenv
from edgeq.data import Dataset
from edgeq.errors import UserInputError

EpochCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0


def shift_augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The originals plus copies shifted by one step up, down, left and right (zero fill).

    Small translations are the cheapest augmentation that holds for handwriting and most image
    classes; the step is 1/8 of the image side (1 pixel on 8×8 digits).
    """
    step = max(1, min(x.shape[1], x.shape[2]) // 8)
    xs, ys = [x], [y]
    for dy, dx in ((step, 0), (-step, 0), (0, step), (0, -step)):
        s = np.zeros_like(x)
        h, w = x.shape[1], x.shape[2]
        s[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
            :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        xs.append(s)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model (fraction)."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _callbacks(on_epoch: EpochCallback | None, epochs: int) -> list[Any]:
    k = tfenv.keras()
    out: list[Any] = [
        # Keep the weights of the best validation epoch: a late unlucky epoch must not decide the model.
        k.callbacks.EarlyStopping(
            monitor="val_acc", mode="max", patience=max(5, epochs // 3), restore_best_weights=True
        )
    ]
    if on_epoch is not None:
        cb = on_epoch

        class _Report(k.callbacks.Callback):  # type: ignore[name-defined]
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                cb(epoch + 1, epochs, {key: float(v) for key, v in (logs or {}).items()})

        out.append(_Report())
    return out


def train_float(model: Any, data: Dataset, cfg: FitConfig, on_epoch: EpochCallback | None = None) -> Any:
    """Train ``model`` (logits out) with cross-entropy on the hard labels."""
    k = tfenv.keras()
    tfenv.reproducible(cfg.seed)
    model.compile(
        optimizer=k.optimizers.Adam(cfg.learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[k.metrics.SparseCategoricalAccuracy(name="acc")],
    )
    x_train, y_train = shift_augment(data.x_train, data.y_train)
    model.fit(
        x_train,
        y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(on_epoch, cfg.epochs),
    )
    return model


def teacher_logits(teacher: Any, x: np.ndarray) -> np.ndarray:
    """The teacher's logits; a teacher that ends in softmax gives probabilities, turned into log-probs."""
    out = np.asarray(teacher.predict(x, batch_size=256, verbose=0), dtype=np.float32)
    if np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        out = np.log(np.clip(out, 1e-7, 1.0))
    return out


def _distillation_loss(num_classes: int, temperature: float, alpha: float) -> Callable[[Any, Any], Any]:
    """alpha · CE(hard labels) + (1 − alpha) · T² · KL(softmax(teacher/T) ‖ softmax(student/T)).

    ``y_true`` packs [label, teacher logits...] in one tensor so plain ``fit`` can carry both.
    """
    tf = tfenv.tensorflow()

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = tf.cast(y_true[:, 0], tf.int32)
        t_logits = y_true[:, 1:]
        hard = tf.keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        p_t = tf.nn.softmax(t_logits / temperature)
        log_p_t = tf.nn.log_softmax(t_logits / temperature)
        log_p_s = tf.nn.log_softmax(y_pred / temperature)
        soft = tf.reduce_sum(p_t * (log_p_t - log_p_s), axis=-1) * temperature**2
        return alpha * hard + (1.0 - alpha) * soft

    return loss


def distill(
    student: Any,
    teacher: Any,
    data: Dataset,
    cfg: FitConfig,
    *,
    temperature: float = 4.0,
    alpha: float = 0.3,
    on_epoch: EpochCallback | None = None,
) -> Any:
    """Train ``student`` on soft teacher targets (temperature) and hard labels (weight ``alpha``)."""
    if temperature <= 0:
        raise UserInputError(f"temperature must be > 0, got {temperature}", "try --temperature 4")
    if not 0.0 <= alpha <= 1.0:
        raise UserInputError(f"alpha must be in [0, 1], got {alpha}", "try --alpha 0.3")
    k = tfenv.keras()
    tfenv.reproducible(cfg.seed)
    x_train, y_train = shift_augment(data.x_train, data.y_train)
    packed_train = _pack(y_train, teacher_logits(teacher, x_train))
    packed_val = _pack(data.y_val, teacher_logits(teacher, data.x_val))
    student.compile(
        optimizer=k.optimizers.Adam(cfg.learning_rate),
        loss=_distillation_loss(data.num_classes, temperature, alpha),
        metrics=[_packed_accuracy()],
    )
    student.fit(
        x_train,
        packed_train,
        validation_data=(data.x_val, packed_val),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(on_epoch, cfg.epochs),
    )
    return student


def _pack(y: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return np.concatenate([y[:, None].astype(np.float32), logits], axis=1)


def _packed_accuracy() -> Any:
    tf = tfenv.tensorflow()

    def acc(y_true: Any, y_pred: Any) -> Any:
        labels = tf.cast(y_true[:, 0], tf.int64)
        return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), labels), tf.float32)

    return acc


def check_quantizable(model: Any) -> None:
    """Fail early, naming the layer, when tfmot's default 8-bit scheme cannot quantize a layer."""
    mot = tfenv.tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    from edgeq.ops.layers import TERNARY_LAYERS  # annotated with their own QuantizeConfig

    reg = registry.Default8BitQuantizeRegistry()
    k = tfenv.keras()
    passthrough = (k.layers.InputLayer, *TERNARY_LAYERS)
    for layer in model.layers:
        if isinstance(layer, passthrough) or reg.supports(layer):
            continue
        if isinstance(layer, mot.quantization.keras.QuantizeWrapperV2 | k.Model):
            continue
        raise UserInputError(
            f"layer {layer.name!r} ({type(layer).__name__}) cannot be quantized by tfmot's default 8-bit "
            "scheme",
            "replace it with a supported layer (Conv2D, DepthwiseConv2D, Dense, pooling, ReLU, ...) or "
            "annotate it with tfmot.quantization.keras.quantize_annotate_layer and a QuantizeConfig",
        )


def quantize_aware(
    model: Any,
    data: Dataset,
    cfg: FitConfig,
    *,
    teacher: Any = None,
    temperature: float = 4.0,
    alpha: float = 0.3,
    on_epoch: EpochCallback | None = None,
) -> Any:
    """Wrap ``model`` with tfmot's ``quantize_model`` and fine-tune it (with distillation if a teacher
    is given). Returns the QAT model (fake-quant nodes in place).

    A model with ternary layers (``edgeq.ops.layers``) is wrapped by ``quantize_ternary_model``
    instead: int8 activations everywhere, ternary weights kept ternary.
    """
    from edgeq.ops.layers import TERNARY_LAYERS, quantize_ternary_model

    mot = tfenv.tfmot()
    check_quantizable(model)
    ternary = any(isinstance(layer, TERNARY_LAYERS) for layer in model.layers)
    try:
        qat = quantize_ternary_model(model) if ternary else mot.quantization.keras.quantize_model(model)
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(
            f"tfmot cannot quantize this model: {str(exc).splitlines()[0]}",
            "use layers supported by tfmot's default 8-bit scheme or annotate the layer with a "
            "QuantizeConfig",
        ) from exc
    if teacher is not None:
        return distill(qat, teacher, data, cfg, temperature=temperature, alpha=alpha, on_epoch=on_epoch)
    return train_float(qat, data, cfg, on_epoch=on_epoch)
