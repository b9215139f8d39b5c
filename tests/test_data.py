"""Datasets: the bundled digits, .npz files, image folders, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support_cli import assert_clean_error, edgeq

from edgeq.data import load_dataset
from edgeq.errors import EXIT_BAD_INPUT, UserInputError


def test_digits_split_is_stratified_disjoint_and_repeatable() -> None:
    a = load_dataset()
    b = load_dataset()
    assert a.fingerprint() == b.fingerprint()
    assert a.input_shape == (8, 8, 1) and a.num_classes == 10
    n = len(a.y_train) + len(a.y_val) + len(a.y_test)
    assert n == 1797
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    # Stratified: every class in every split, proportions close to the whole.
    for y in (a.y_train, a.y_val, a.y_test):
        frac = np.bincount(y, minlength=10) / len(y)
        assert np.all(np.abs(frac - 0.1) < 0.02)
    # Disjoint: no test image appears in training.
    train = {r.tobytes() for r in a.x_train}
    assert sum(r.tobytes() in train for r in a.x_test) < 5  # digits has a few true duplicates
    assert load_dataset(seed=1).fingerprint() != a.fingerprint()


def test_npz_uint8_grayscale_with_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 12, 10), dtype=np.uint8)
    y = np.repeat([3, 7, 9], 20)
    np.savez(tmp_path / "d.npz", x=x, y=y, labels=np.array(["cat", "dog", "eel"]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.input_shape == (12, 10, 1)
    assert ds.labels == ("cat", "dog", "eel")
    assert set(np.unique(ds.y_train)) == {0, 1, 2}
    assert ds.x_train.max() <= 1.0


def test_image_folder_resizes_any_size_and_keeps_colour(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            size = (20 + 7 * i, 30 + 3 * i)
            arr = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
            arr = np.clip(arr + rng.integers(0, 20, arr.shape), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(tmp_path, image_size=(16, 24))
    assert ds.input_shape == (16, 24, 3)
    assert ds.labels == ("blue", "red")
    # Colour survives: red images have a high red channel.
    red = ds.x_train[ds.y_train == 1]
    assert red[..., 0].mean() > 0.9 and red[..., 2].mean() < 0.2


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"images": np.zeros((10, 8, 8)), "y": np.zeros(10, int)}, "no 'x'"),
        ({"x": np.zeros((10, 8, 8))}, "no 'y'"),
        ({"x": np.zeros((10, 64)), "y": np.arange(10) % 2}, "x has shape (10, 64)"),
        ({"x": np.zeros((10, 8, 8)), "y": np.zeros(9, int)}, "y has shape (9,)"),
        ({"x": np.zeros((10, 8, 8)), "y": np.zeros(10, int)}, "single class"),
        ({"x": np.zeros((10, 8, 8)), "y": np.linspace(0, 1, 10)}, "integer class labels"),
        ({"x": np.zeros((12, 8, 8)), "y": np.arange(12) % 2, "labels": np.array(["a"])}, "labels has 1"),
    ],
)
def test_bad_npz_is_one_clear_error(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(UserInputError) as e:
        load_dataset(tmp_path / "bad.npz")
    assert needle in e.value.message and e.value.hint
    assert "\n" not in e.value.message


def test_bad_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="no class sub-folders"):
        load_dataset(empty)
    (empty / "a").mkdir()
    with pytest.raises(UserInputError, match="has no images"):
        load_dataset(empty)
    for i in range(4):
        Image.new("L", (8, 8), i * 40).save(empty / "a" / f"{i}.png")
    with pytest.raises(UserInputError, match="single class"):
        load_dataset(empty)
    (empty / "b").mkdir()
    (empty / "b" / "0.png").write_bytes(b"not a png at all")
    with pytest.raises(UserInputError, match="cannot read image"):
        load_dataset(empty)


def test_cli_bad_data_exits_2_in_two_lines_and_writes_nothing(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((10, 8, 8)))
    out = tmp_path / "out"
    run = edgeq("pipeline", "--data", tmp_path / "bad.npz", "--out", out)
    assert_clean_error(run, EXIT_BAD_INPUT, "no 'x'")
    assert not out.exists()

    run = edgeq("train", "--data", tmp_path / "missing.npz", "--out", tmp_path / "t.keras")
    assert_clean_error(run, EXIT_BAD_INPUT, "dataset not found")
    (tmp_path / "emptydir").mkdir()
    run = edgeq("train", "--data", tmp_path / "emptydir", "--out", tmp_path / "t.keras")
    assert_clean_error(run, EXIT_BAD_INPUT, "no class sub-folders")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken zip")
    run = edgeq("train", "--data", tmp_path / "corrupt.npz", "--out", tmp_path / "t.keras")
    assert_clean_error(run, EXIT_BAD_INPUT, "cannot read corrupt.npz")
    assert list(tmp_path.glob("t.keras*")) == []
