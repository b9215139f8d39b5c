"""The one way edgeq imports TensorFlow: Keras 2 (tf_keras) for tfmot, quiet logs, fixed seeds.

``TF_USE_LEGACY_KERAS`` must be set before TensorFlow is first imported, so every module that needs
TensorFlow calls :func:`tensorflow` / :func:`keras` instead of importing it at module level (which also
keeps ``edgeq --help`` and the device-side code free of the TensorFlow start-up cost).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any


def _prepare() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # 3 also hides the "failed call to cuInit" line printed on every machine without a GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Hold what native code writes to fd 1 and 2 (TensorFlow's import banner, the converter's
    "fully_quantize" line, LiteRT's "Created XNNPACK delegate") and replay it only on failure, so
    it does not garble the progress display or a ``--json`` stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def tensorflow() -> Any:
    _prepare()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_native():
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    return tf


def keras() -> Any:
    """tf_keras (Keras 2): the Keras that TensorFlow Model Optimization supports."""
    tensorflow()
    import tf_keras

    return tf_keras


def tfmot() -> ModuleType:
    keras()
    import tensorflow_model_optimization as mot

    return mot


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (training stays nondeterministic across thread schedules)."""
    keras().utils.set_random_seed(seed)
