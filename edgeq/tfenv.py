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
    """Seed Python's ``random``, NumPy's global generator, TensorFlow and tf_keras's own generator."""
    keras().utils.set_random_seed(int(seed))


def reproducible(seed: int) -> None:
    """Make the training that follows repeat bit for bit on this machine: TensorFlow's op determinism
    and every seed (Python, NumPy, TensorFlow, tf_keras: weight initializers, dropout, ``fit``'s
    shuffle). Call it before a model is *built* too, or its initial weights come from whatever the
    process drew before.

    Measured on digits (teacher, student, QAT, int8 export): the weights and the .tflite bytes repeat
    exactly run after run. What still changes them is the number of threads TensorFlow splits an op
    over (1, 2 and 8 threads gave three different teachers; the default is the number of CPUs this
    process may use, see :func:`training_facts`) and the CPU's vector instructions: a run repeats on
    one machine, not across machines.
    """
    tf = tensorflow()
    tf.config.experimental.enable_op_determinism()
    set_seed(seed)


def training_facts() -> dict[str, Any]:
    """What decides whether two trainings can repeat each other exactly, for a recipe or a report."""
    tf = tensorflow()
    from tensorflow.python.framework import config as tf_config  # no public getter for the flag

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # 0 means TensorFlow's default: TF_NUM_INTRAOP_THREADS, else one thread per CPU the process may use.
    intra = tf.config.threading.get_intra_op_parallelism_threads() or int(
        os.environ.get("TF_NUM_INTRAOP_THREADS") or cpus
    )
    return {
        "op_determinism": bool(tf_config.is_op_determinism_enabled()),
        "intra_op_threads": intra,
        "tensorflow": tf.__version__,
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
