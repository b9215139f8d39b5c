"""tf_keras layers with ternary weights: ``TernaryDense`` and ``TernaryConv2D``.

Forward: the latent float kernel is ternarized per output channel, ``Δ = 0.7·mean|W|``,
``α = mean(|W| where |W| > Δ)``, ``Ŵ = α·sign(W)·[|W| > Δ]``. Backward: straight-through,
``∂L/∂W = ∂L/∂Ŵ`` (``tf.grad_pass_through``), so the optimizer keeps updating the latent weights.

Activations are fake-quantized to int8 by tfmot's QAT like every other layer:
:func:`quantize_ternary_model` annotates these layers with :class:`TernaryQuantizeConfig`
(8-bit moving-average activation quantizer, no weight quantizer: a ternary kernel is exactly
representable as per-channel int8 ``{−127, 0, +127}·α/127``). The TFLite converter then emits
plain int8 FULLY_CONNECTED / CONV_2D ops with per-channel ternary weights, which
:mod:`edgeq.ops.rewrite` turns losslessly into the ternary custom ops.

Importing this module imports TensorFlow (through :mod:`edgeq.tfenv`).
"""

from __future__ import annotations

from typing import Any

from edgeq import tfenv

tf = tfenv.tensorflow()
keras = tfenv.keras()
mot = tfenv.tfmot()

THRESHOLD_FACTOR = 0.7


def ternarize(kernel: Any, axes: list[int], threshold_factor: float = THRESHOLD_FACTOR) -> Any:
    """α·sign(W)·[|W| > Δ] per output channel (``axes`` = the reduction axes: all but the last)."""
    absw = tf.abs(kernel)
    delta = threshold_factor * tf.reduce_mean(absw, axis=axes, keepdims=True)
    mask = tf.cast(absw > delta, kernel.dtype)
    alpha = tf.math.divide_no_nan(
        tf.reduce_sum(absw * mask, axis=axes, keepdims=True), tf.reduce_sum(mask, axis=axes, keepdims=True)
    )
    return alpha * tf.sign(kernel) * mask


def ternarize_ste(kernel: Any, axes: list[int], threshold_factor: float = THRESHOLD_FACTOR) -> Any:
    """:func:`ternarize` forward, identity gradient backward (straight-through estimator)."""
    return tf.grad_pass_through(lambda w: ternarize(w, axes, threshold_factor))(kernel)


@keras.utils.register_keras_serializable(package="edgeq")
class TernaryDense(keras.layers.Dense):  # type: ignore[name-defined]
    """``Dense`` whose kernel is ternarized per output unit in every forward pass."""

    def __init__(self, units: int, threshold_factor: float = THRESHOLD_FACTOR, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.threshold_factor = float(threshold_factor)

    def ternary_kernel(self) -> Any:
        """The kernel the forward pass uses, ``[in, units]``."""
        return ternarize(self.kernel, [0], self.threshold_factor)

    def call(self, inputs: Any) -> Any:
        kernel = ternarize_ste(self.kernel, [0], self.threshold_factor)
        inputs = tf.cast(inputs, self.compute_dtype)
        rank = inputs.shape.rank
        out = tf.matmul(inputs, kernel) if rank == 2 else tf.tensordot(inputs, kernel, [[rank - 1], [0]])
        if self.use_bias:
            out = tf.nn.bias_add(out, self.bias)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["threshold_factor"] = self.threshold_factor
        return config


@keras.utils.register_keras_serializable(package="edgeq")
class TernaryConv2D(keras.layers.Conv2D):  # type: ignore[name-defined]
    """``Conv2D`` whose kernel ``[KH, KW, C, O]`` is ternarized per output channel (groups = 1)."""

    def __init__(
        self, filters: int, kernel_size: Any, threshold_factor: float = THRESHOLD_FACTOR, **kwargs: Any
    ) -> None:
        super().__init__(filters, kernel_size, **kwargs)
        if self.groups != 1:
            raise ValueError("TernaryConv2D supports groups=1 only")
        self.threshold_factor = float(threshold_factor)

    def ternary_kernel(self) -> Any:
        return ternarize(self.kernel, [0, 1, 2], self.threshold_factor)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        return super().convolution_op(inputs, ternarize_ste(kernel, [0, 1, 2], self.threshold_factor))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["threshold_factor"] = self.threshold_factor
        return config


TERNARY_LAYERS = (TernaryDense, TernaryConv2D)


@keras.utils.register_keras_serializable(package="edgeq")
class TernaryQuantizeConfig(mot.quantization.keras.QuantizeConfig):  # type: ignore[name-defined]
    """tfmot config for the ternary layers: int8 fake-quant of the activation output only."""

    def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
        quantizer = mot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False
        )
        return [(layer.activation, quantizer)]

    def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer: Any) -> list[Any]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {}


def custom_objects() -> dict[str, Any]:
    """What ``load_model`` needs in scope for models with ternary layers (QAT or not)."""
    return {
        "TernaryDense": TernaryDense,
        "TernaryConv2D": TernaryConv2D,
        "TernaryQuantizeConfig": TernaryQuantizeConfig,
    }


def quantize_ternary_model(model: Any) -> Any:
    """tfmot QAT for a model mixing ternary and standard layers (weights kept).

    Ternary layers get :class:`TernaryQuantizeConfig`; every other layer tfmot's default 8-bit
    scheme. Train the result with ``edgeq.train.core.distill`` / ``train_float`` as usual.
    """
    q = mot.quantization.keras

    def annotate(layer: Any) -> Any:
        if isinstance(layer, TERNARY_LAYERS):
            return q.quantize_annotate_layer(layer, TernaryQuantizeConfig())
        return layer

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated = q.quantize_annotate_model(annotated)
    with q.quantize_scope(custom_objects()):
        return q.quantize_apply(annotated)


def load_ternary_model(path: Any) -> Any:
    """Load a saved model with ternary layers (plain or QAT)."""
    with mot.quantization.keras.quantize_scope(custom_objects()):
        return keras.models.load_model(path, compile=False)
