"""Checks that warn when a run's figures cannot mean what they seem to: a dataset too small to train
on or to measure with, an accuracy no better than guessing, a "student" that is not smaller than its
teacher. Each check returns a list of :class:`CheckWarning` (empty when all is well); nothing here
stops a run.

>>> for w in dataset_warnings(ds, max_accuracy_drop_points=1.0):
...     print(w.message, "-", w.hint)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeq.data import Dataset

# Below these, a test split measures accuracy too coarsely, or a class has too few samples to be
# learned or measured at all. The default digits split (359 test samples, 28 or more per class in
# every split) passes every check.
MIN_TEST_SAMPLES = 100
MIN_TEST_PER_CLASS = 5
MIN_TRAIN_PER_CLASS = 10
# An accuracy is "at chance" when a one-sided binomial test cannot tell it from the best blind guess
# at this level, and "near chance" when it is significant but fewer than NEAR_CHANCE_POINTS above it.
CHANCE_ALPHA = 0.05
NEAR_CHANCE_POINTS = 5.0
# The shares of the data in the test and training splits (edgeq.data's default split), for the
# "add N images" hints.
TEST_FRACTION = 0.2
TRAIN_FRACTION = 0.65

# How a report's accuracy keys read in a sentence.
MODEL_NAMES = {
    "teacher_float": "the teacher",
    "student_float": "the float student",
    "student_int8_qat": "the int8 model (model.tflite)",
    "student_int8_ptq": "the PTQ baseline (model_ptq.tflite)",
    "student_int8_qat_builtin_ops": "the int8 model with builtin ops",
}


@dataclass(frozen=True)
class CheckWarning:
    """One warning: ``code`` for machines (``data.small_test_split``), ``message`` one line of what
    is wrong, ``hint`` one line of what to do. ``to_dict()`` is a Report ``warnings`` entry."""

    code: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def announce(
    warnings: Iterable[CheckWarning], on_event: Callable[[dict[str, Any]], None]
) -> list[dict[str, str]]:
    """Send each warning as a ``{"event": "warning", ...}`` event (the CLI prints it at once) and
    return them as Report ``warnings`` entries."""
    out = [w.to_dict() for w in warnings]
    for w in out:
        on_event({"event": "warning", **w})
    return out


def _class_names(labels: tuple[str, ...], idx: Iterable[int], limit: int = 3) -> str:
    picked = [repr(labels[i]) for i in idx]
    more = f" and {len(picked) - limit} more" if len(picked) > limit else ""
    return ", ".join(picked[:limit]) + more


def dataset_warnings(ds: Dataset, max_accuracy_drop_points: float | None = None) -> list[CheckWarning]:
    """Warn when the test split measures accuracy too coarsely (one sample is 100/n points; with
    ``max_accuracy_drop_points``, say when one sample decides the accuracy gate), or when classes
    have too few samples to learn (training split) or to measure (test split)."""
    out: list[CheckWarning] = []
    n_test = len(ds.y_test)
    k = ds.num_classes
    in_all = f"about {int(np.ceil(MIN_TEST_SAMPLES / TEST_FRACTION))} images in all"
    if 0 < n_test < MIN_TEST_SAMPLES:
        step = 100.0 / n_test
        gate = ""
        if max_accuracy_drop_points is not None and step > max_accuracy_drop_points:
            gate = f", more than the accuracy gate allows (--max-accuracy-drop {max_accuracy_drop_points:g})"
        out.append(
            CheckWarning(
                "data.small_test_split",
                f"the test split has only {n_test} samples: accuracy moves in steps of {step:.1f} points "
                f"(1/{n_test}){gate}",
                f"add images (the test split is {TEST_FRACTION:.0%} of them): {in_all} give a test split "
                f"of {MIN_TEST_SAMPLES}",
            )
        )
    train = np.bincount(ds.y_train, minlength=k)
    val = np.bincount(ds.y_val, minlength=k)
    test = np.bincount(ds.y_test, minlength=k)
    few = [i for i in range(k) if train[i] < MIN_TRAIN_PER_CLASS or test[i] < MIN_TEST_PER_CLASS]
    if few:
        worst = min(few, key=lambda i: (int(train[i] + val[i] + test[i]), i))
        need = max(MIN_TEST_PER_CLASS / TEST_FRACTION, MIN_TRAIN_PER_CLASS / TRAIN_FRACTION)
        per_class = int(np.ceil(need / 10.0) * 10)  # rounded up: a stratified split rounds per class
        out.append(
            CheckWarning(
                "data.few_per_class",
                f"{len(few)} of {k} classes {'has' if len(few) == 1 else 'have'} fewer than "
                f"{MIN_TRAIN_PER_CLASS} training or {MIN_TEST_PER_CLASS} test samples "
                f"({_class_names(ds.labels, few)}; fewest: "
                f"{ds.labels[worst]!r} with {train[worst]} training, {val[worst]} validation, {test[worst]} test): "
                "too few to learn those classes or to measure them",
                f"add images to those classes, {per_class} or more each",
            )
        )
    return out


def binomial_p_value(correct: int, n: int, p0: float) -> float:
    """P(X >= correct) for X ~ Binomial(n, p0): the chance that guessing alone scores this well."""
    from scipy.stats import binomtest

    if n <= 0:
        return 1.0
    return float(binomtest(int(correct), int(n), float(p0), alternative="greater").pvalue)


def chance_level(y_test: np.ndarray, num_classes: int) -> float:
    """The best blind guess: always the most common test class (1/num_classes when balanced)."""
    if len(y_test) == 0:
        return 1.0 / num_classes
    return max(1.0 / num_classes, float(np.bincount(y_test, minlength=num_classes).max() / len(y_test)))


def accuracy_warnings(
    accuracies: Mapping[str, float], y_test: np.ndarray, num_classes: int
) -> list[CheckWarning]:
    """Warn when a model's test accuracy is at chance (a one-sided binomial test against always
    guessing the most common class cannot reject it, p >= CHANCE_ALPHA) or near it (fewer than
    NEAR_CHANCE_POINTS above). ``accuracies`` are fractions, keyed as in a Report
    (``teacher_float``, ``student_int8_qat``, ...)."""
    n = len(y_test)
    if n == 0:
        return []
    chance = chance_level(y_test, num_classes)
    at, near = [], []
    for key, acc in accuracies.items():
        correct = int(round(acc * n))
        p = binomial_p_value(correct, n, chance)
        name = MODEL_NAMES.get(key, key)
        if p >= CHANCE_ALPHA:
            at.append(f"{name} {acc:.3f} (p = {p:.2g})")
        elif (acc - chance) * 100.0 < NEAR_CHANCE_POINTS:
            near.append(f"{name} {acc:.3f}")
    guess = f"always guessing the most common class scores {chance:.3f}"
    hint = (
        "add images to every class, train longer (--teacher-epochs, --student-epochs), and check that "
        "each class folder or label holds its own images"
    )
    out: list[CheckWarning] = []
    if at:
        out.append(
            CheckWarning(
                "accuracy.at_chance",
                f"no better than chance on {n} test samples ({guess}; one-sided binomial test): {', '.join(at)}",
                hint,
            )
        )
    if near:
        out.append(
            CheckWarning(
                "accuracy.near_chance",
                f"less than {NEAR_CHANCE_POINTS:g} points above chance ({guess}): {', '.join(near)}",
                hint,
            )
        )
    return out


def size_warnings(teacher_params: int, student_params: int) -> list[CheckWarning]:
    """Warn when the student is not smaller than the teacher it learns from: distillation is meant to
    make a smaller model."""
    if teacher_params <= 0 or student_params < teacher_params:
        return []
    ratio = student_params / teacher_params
    return [
        CheckWarning(
            "model.student_not_smaller",
            f"the student ({student_params:,} parameters) is {ratio:.1f}x the size of the teacher "
            f"({teacher_params:,} parameters): distilling will not make a smaller model",
            "pass a larger teacher with --teacher, or measure your teacher as it is (edgeq export "
            "teacher.keras --data <your data> --out teacher.tflite, then edgeq profile teacher.tflite)",
        )
    ]
