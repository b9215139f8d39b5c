"""Issue 13, item 5: the same seed on the same machine gives the same run, bit for bit.

Before, the initial weights of the built-in models were drawn before anything was seeded, so four
pipelines with seed 0 gave four teachers (0.9861 / 0.9916 / 0.9944 / 0.9972).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support_cli import edgeq

from edgeq import tfenv
from edgeq.data import load_dataset
from edgeq.models import build_model, load_any
from edgeq.train.core import FitConfig, accuracy, distill, quantize_aware, train_float


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> Any:
    return load_any(path, (8, 8, 1), 10)[0]  # digits: 8x8x1, 10 classes


def _assert_same_weights(a: list[np.ndarray], b: list[np.ndarray], what: str) -> None:
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.shape == y.shape and np.array_equal(x, y), f"{what}: weight {i} differs"


@pytest.mark.slow
def test_pipeline_twice_with_the_same_seed_gives_the_same_models_and_accuracies(
    pipeline_dir: Path, tmp_path: Path
) -> None:
    """A second pipeline, in a new process, with the training settings of the session's pipeline
    (read from its report) repeats every accuracy, every weight and every .tflite byte."""
    first = json.loads((pipeline_dir / "report.json").read_text())
    recipe = first["recipe"]
    again = tmp_path / "again"
    run = edgeq(
        "pipeline",
        "--out",
        again,
        *("--teacher-epochs", recipe["teacher_epochs"], "--student-epochs", recipe["student_epochs"]),
        *("--qat-epochs", recipe["qat_epochs"], "--seed", recipe["seed"]),
        *("--runs", "5", "--warmup", "1", "--max-accuracy-drop", "100"),
        env={"EDGEQ_HOME": str(tmp_path / "home")},
    )
    assert run.code == 0, run.stderr
    second = json.loads((again / "report.json").read_text())
    assert second["accuracy"] == first["accuracy"]
    assert second["profile"]["accuracy"] == first["profile"]["accuracy"]
    for name in ("model.tflite", "model_ptq.tflite", "student_float.tflite"):
        assert _sha(again / name) == _sha(pipeline_dir / name), name
    for name in ("teacher.keras", "student.keras", "student_qat.h5"):
        _assert_same_weights(
            _load(pipeline_dir / name).get_weights(),
            _load(again / name).get_weights(),
            name,
        )


@pytest.fixture
def op_determinism_restored() -> Iterator[None]:
    """tfenv.reproducible turns TensorFlow's op determinism on for the process; leave the rest of
    the session as it found it."""
    tfenv.tensorflow()
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    yield
    if not was:
        tf_config.disable_op_determinism()


def _train_distill_qat(ds: Any) -> dict[str, Any]:
    """The steps `edgeq train`, `edgeq distill` and `edgeq qat` take, one epoch each."""
    tfenv.reproducible(7)
    teacher = build_model("teacher", ds.input_shape, ds.num_classes)
    train_float(teacher, ds, FitConfig(1, seed=7))
    student = build_model("student", ds.input_shape, ds.num_classes)
    distill(student, teacher, ds, FitConfig(1, seed=7))
    student_weights = student.get_weights()
    qat = quantize_aware(student, ds, FitConfig(1, learning_rate=5e-4, seed=7), teacher=teacher)
    return {
        "weights": {"teacher": teacher.get_weights(), "student": student_weights, "qat": qat.get_weights()},
        "accuracy": {
            m: accuracy(model, ds.x_test, ds.y_test) for m, model in (("teacher", teacher), ("qat", qat))
        },
    }


@pytest.mark.slow
@pytest.mark.usefixtures("op_determinism_restored")
def test_train_distill_and_qat_repeat_exactly_in_one_process() -> None:
    full = load_dataset()
    # A third of the training split keeps this quick; what repeats does not depend on the size.
    ds = dataclasses.replace(full, x_train=full.x_train[:400], y_train=full.y_train[:400])
    a = _train_distill_qat(ds)
    assert tfenv.training_facts()["op_determinism"] is True
    b = _train_distill_qat(ds)
    assert a["accuracy"] == b["accuracy"]
    for step in ("teacher", "student", "qat"):
        _assert_same_weights(a["weights"][step], b["weights"][step], step)


def test_training_facts_say_what_a_repeat_depends_on() -> None:
    facts = tfenv.training_facts()
    assert set(facts) == {"op_determinism", "intra_op_threads", "tensorflow", "cpu"}
    assert facts["intra_op_threads"] >= 1 and facts["tensorflow"] and facts["cpu"]
