"""Built-in architectures (a float teacher CNN, a small student) and Keras model files."""

from edgeq.models.io import (
    check_fits,
    is_qat,
    load_any,
    load_keras_file,
    load_qat_model,
    load_user_model,
    read_record,
    recorded_data_options,
    save_model,
)
from edgeq.models.zoo import build_model, check_input_shape, check_training_fits, count_params

__all__ = [
    "build_model",
    "check_fits",
    "check_input_shape",
    "check_training_fits",
    "count_params",
    "is_qat",
    "load_any",
    "load_keras_file",
    "load_qat_model",
    "load_user_model",
    "read_record",
    "recorded_data_options",
    "save_model",
]
