"""Issue 13, item 13: a Keras 3 model given where edgeq wants a tf_keras one is one line that says it
is a Keras 3 file and how to save it for tf_keras (before: tf_keras's message about ``batch_shape``).

The Keras 3 files are made by real Keras 3 (TensorFlow 2.21's ``import keras``) in a process
without TF_USE_LEGACY_KERAS, as a user's own script would make them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support_cli import Run, assert_clean_error, edgeq

from edgeq import tfenv
from edgeq.models.io import load_user_model, saved_keras_version

# The same small digits classifier (8x8x1 in, 10 logits out), once in Keras 3 and once in tf_keras.
_LAYERS = """
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ]
"""

_KERAS3_SCRIPT = (
    """
import sys
import numpy as np
import keras
assert keras.__version__.split(".")[0] == "3", keras.__version__
out = sys.argv[1]
"""
    + textwrap.dedent(_LAYERS)
    + """
model = keras.Sequential(layers)
x = np.random.default_rng(0).uniform(0.0, 1.0, (16, 8, 8, 1)).astype("float32")
model.save(f"{out}/teacher.keras")
model.save(f"{out}/teacher.h5")
weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
np.savez(f"{out}/keras3.npz", x=x, y=model.predict(x, verbose=0), **weights)
print(keras.__version__)
"""
)


@pytest.fixture(scope="module")
def keras3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keras3")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    p = subprocess.run(
        [sys.executable, "-c", _KERAS3_SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith("3."), p.stdout
    return out


def _assert_keras3_line(run: Run, name: str) -> None:
    assert_clean_error(run, 2, f"{name} is a Keras 3 file", "edgeq reads Keras 2 (tf_keras) models only")
    hint = [ln for ln in run.stderr.splitlines() if ln.startswith("what to do: ")][-1]
    for needle in ("import tf_keras as keras", "TF_USE_LEGACY_KERAS=1", "set_weights", "model.save("):
        assert needle in hint, (needle, hint)
    assert "batch_shape" not in run.stderr


@pytest.mark.parametrize("name", ["teacher.keras", "teacher.h5"])
def test_distill_with_a_keras3_teacher_says_so(keras3_dir: Path, tmp_path: Path, name: str) -> None:
    run = edgeq("distill", keras3_dir / name, "--out", tmp_path / "student.keras", "--epochs", "1")
    _assert_keras3_line(run, name)
    assert not (tmp_path / "student.keras").exists()


def test_pipeline_with_a_keras3_teacher_says_so_before_any_work(keras3_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = edgeq(
        "pipeline", "--teacher", keras3_dir / "teacher.keras", "--out", out,
        env={"EDGEQ_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    _assert_keras3_line(run, "teacher.keras")
    assert not out.exists() or not any(out.iterdir())


def test_qat_with_a_keras3_model_or_teacher_says_so(keras3_dir: Path, tmp_path: Path) -> None:
    run = edgeq("qat", keras3_dir / "teacher.h5", "--out", tmp_path / "qat.h5", "--epochs", "1")
    _assert_keras3_line(run, "teacher.h5")
    ok = _tf_keras_copy(keras3_dir, tmp_path / "float.keras")
    run = edgeq(
        "qat", ok, "--teacher", keras3_dir / "teacher.keras", "--out", tmp_path / "qat.h5", "--epochs", "1"
    )
    _assert_keras3_line(run, "teacher.keras")
    assert not (tmp_path / "qat.h5").exists()


def _tf_keras_copy(keras3_dir: Path, dest: Path) -> Path:
    """What the hint tells the user to do: the same layers in tf_keras, the Keras 3 weights copied in."""
    keras = tfenv.keras()
    scope: dict[str, object] = {"keras": keras}
    exec(textwrap.dedent(_LAYERS), scope)  # the very layer list the Keras 3 script ran
    model = keras.Sequential(scope["layers"])
    with np.load(keras3_dir / "keras3.npz") as f:
        weights = [f[f"w{i}"] for i in range(len(model.get_weights()))]
    model.set_weights(weights)
    model.save(dest)
    return dest


def test_the_hint_works_and_tf_keras_files_still_load(keras3_dir: Path, tmp_path: Path) -> None:
    """The file the hint makes is a tf_keras file edgeq loads, and it computes what the Keras 3
    model computed."""
    assert (saved_keras_version(keras3_dir / "teacher.keras") or "").startswith("3.")
    assert (saved_keras_version(keras3_dir / "teacher.h5") or "").startswith("3.")
    copy = _tf_keras_copy(keras3_dir, tmp_path / "teacher_tf_keras.keras")
    assert (saved_keras_version(copy) or "").startswith("2.")
    model = load_user_model(copy, (8, 8, 1), 10)
    with np.load(keras3_dir / "keras3.npz") as f:
        np.testing.assert_allclose(model.predict(f["x"], verbose=0), f["y"], rtol=1e-5, atol=1e-5)
    h5 = tmp_path / "teacher_tf_keras.h5"
    model.save(h5)
    assert (saved_keras_version(h5) or "").startswith("2.")
    load_user_model(h5, (8, 8, 1), 10)
    assert saved_keras_version(tmp_path / "missing.keras") is None
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    assert saved_keras_version(junk) is None
