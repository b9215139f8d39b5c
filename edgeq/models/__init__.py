"""Built-in architectures (a float teacher CNN, a small student) and Keras model files."""

from edgeq.models.io import is_qat, load_any, load_qat_model, load_user_model, save_model
from edgeq.models.zoo import build_model, count_params

__all__ = [
    "build_model",
    "count_params",
    "is_qat",
    "load_any",
    "load_qat_model",
    "load_user_model",
    "save_model",
]
