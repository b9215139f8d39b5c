"""A model's own preprocessing (issue 13): test data scored as the model's data were prepared (item 4),
image sizes checked against the architectures and the memory before any work (item 11), and the
preprocessing a device must apply recorded in the sidecar, labels shipped with the model (item 19).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support_cli import assert_clean_error, edgeq

from edgeq.data import Dataset, load_dataset, peek_dataset
from edgeq.errors import EXIT_BAD_INPUT, UserInputError


def make_folder(
    root: Path,
    classes: tuple[str, ...] = ("blue", "green", "red"),
    n: int = 8,
    grey_every: int = 0,
    base: tuple[int, int] = (30, 26),
) -> Path:
    """One sub-folder per class of colour-tinted noise images of varying sizes; every
    ``grey_every``-th image saved greyscale."""
    colours = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0), "grey": (128, 128, 128)}
    rng = np.random.default_rng(len(classes) * 100 + n)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = base[0] + i, base[1] + 2 * i
            arr = np.clip(np.full((h, w, 3), colours[cls]) + rng.integers(0, 60, (h, w, 3)), 0, 255)
            im = Image.fromarray(arr.astype(np.uint8))
            if grey_every and i % grey_every == 0:
                im = im.convert("L")
            im.save(root / cls / f"{i}.png")
    return root


def export_model(ds: Dataset, dest: Path) -> Path:
    """The built-in student for ``ds`` (untrained: these tests are about data, not accuracy), saved as
    .keras and exported to full int8 with its sidecar, as `edgeq export` does."""
    from edgeq.export.convert import to_int8_tflite
    from edgeq.export.sidecar import write_sidecar
    from edgeq.models import build_model, save_model

    dest.mkdir(parents=True, exist_ok=True)
    model = build_model("student", ds.input_shape, ds.num_classes)
    save_model(model, dest / "student.keras", dataset=ds)
    out = dest / "model.tflite"
    out.write_bytes(to_int8_tflite(model, ds.x_train[:32]))
    write_sidecar(
        out,
        dataset=ds,
        recipe={"steps": ["export"], "quantization": "ptq"},
        accuracy={},
        source=dest / "student.keras",
    )
    return out


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    ds = load_dataset()
    return export_model(ds, tmp_path_factory.mktemp("digits-model")), ds


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Dataset]:
    """A model trained on a folder of mixed-size images at 24x24 (not edgeq's default 32x32)."""
    root = tmp_path_factory.mktemp("folder-model")
    data = make_folder(root / "shapes", grey_every=3)
    ds = load_dataset(data, image_size=(24, 24))
    return export_model(ds, root / "model"), data, ds


# ------------------------------------------------------------------------------------------------
# Item 4: test data through the model's own preprocessing


def test_own_dataset_gives_only_its_test_split(digits_model: tuple[Path, Dataset]) -> None:
    from edgeq.export.model_data import model_test_data

    model, ds = digits_model
    md = model_test_data(model, "digits")
    assert md.split == "test" and len(md.y) == len(ds.y_test) < 1797
    assert np.array_equal(md.x, ds.x_test) and np.array_equal(md.y, ds.y_test)
    assert "test split" in md.description and md.warnings == ()


def test_folder_model_is_scored_on_its_own_folder_from_anywhere(
    folder_model: tuple[Path, Path, Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq.export.model_data import model_test_data

    model, data, ds = folder_model
    monkeypatch.chdir(tmp_path)  # the sidecar's paths do not depend on where the model was made
    md = model_test_data(model, data)
    assert md.x.shape[1:] == (24, 24, 3) and md.split == "test"
    assert np.array_equal(md.x, ds.x_test) and np.array_equal(md.y, ds.y_test)
    # No data named: the model's own dataset, as the sidecar records it.
    assert np.array_equal(model_test_data(model).x, ds.x_test)


def test_other_data_is_resized_converted_and_matched_by_class_name(
    folder_model: tuple[Path, Path, Dataset], tmp_path: Path
) -> None:
    from edgeq.export.model_data import model_test_data

    model, _, ds = folder_model
    # Two of the model's three classes, in another order, bigger, all greyscale.
    other = make_folder(tmp_path / "other", classes=("red", "blue"), n=4, base=(50, 40))
    for f in other.rglob("*.png"):
        Image.open(f).convert("L").save(f)
    md = model_test_data(model, other)
    assert md.split == "all" and md.x.shape == (8, 24, 24, 3)
    assert md.labels == ds.labels == ("blue", "green", "red")
    assert list(md.y) == [0] * 4 + [2] * 4  # 'blue' is the model's 0, 'red' its 2
    assert np.allclose(md.x[..., 0], md.x[..., 2])  # grey copied into the model's three channels

    with pytest.raises(UserInputError) as e:
        model_test_data(model, "digits")  # classes 0-9 are not blue/green/red
    assert "classes the model does not know" in e.value.message and "blue" in e.value.message

    # Without a sidecar the model's input shape still decides the preprocessing, and its output size
    # the classes it can be scored on.
    bare = tmp_path / "bare" / "model.tflite"
    bare.parent.mkdir()
    bare.write_bytes(model.read_bytes())
    assert model_test_data(bare, other).x.shape == (8, 24, 24, 3)
    with pytest.raises(UserInputError, match="digits has 10 classes but model.tflite has 3 outputs"):
        model_test_data(bare, "digits")


def test_other_data_in_file_order_and_a_scale_mismatch_warned(
    digits_model: tuple[Path, Dataset], tmp_path: Path
) -> None:
    from edgeq.export.model_data import model_test_data

    model, ds = digits_model
    np.savez(tmp_path / "test.npz", x=ds.x_test, y=ds.y_test)  # already scaled to [0, 1]
    md = model_test_data(model, tmp_path / "test.npz")
    assert md.split == "all" and md.warnings == ()
    assert np.array_equal(md.x, ds.x_test) and np.array_equal(md.y, ds.y_test)  # every sample, file order
    np.savez(tmp_path / "raw.npz", x=ds.x_test * 255.0, y=ds.y_test)  # 0-255 floats
    (warning,) = model_test_data(model, tmp_path / "raw.npz").warnings
    assert "values up to 255" in warning and "another scale" in warning


def test_profile_test_data_is_the_models_test_split(
    digits_model: tuple[Path, Dataset], folder_model: tuple[Path, Path, Dataset], tmp_path: Path
) -> None:
    env = {"EDGEQ_HOME": str(tmp_path / "home")}
    model, ds = digits_model
    run = edgeq("profile", model, "--test-data", "digits", "--runs", "5", "--warmup", "1", "--json", env=env)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["accuracy"]["n"] == len(ds.y_test)  # not all 1,797 samples

    fmodel, data, fds = folder_model
    run = edgeq("profile", fmodel, "--test-data", data, "--runs", "5", "--warmup", "1", "--json", env=env)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["accuracy"]["n"] == len(fds.y_test)


# ------------------------------------------------------------------------------------------------
# Item 11: image sizes checked up front


def test_architecture_limits_agree_with_keras(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.models import zoo

    monkeypatch.setattr(zoo, "check_input_shape", lambda arch, shape: None)  # let Keras judge
    monkeypatch.setattr(zoo.memory, "require", lambda *a: None)
    for arch in ("teacher", "student"):
        for h, w in ((1, 1), (2, 2), (1, 8), (6, 17), (7, 17), (17, 7)):
            refused = zoo._walk(arch, (h, w, 1), 3)[2] is not None
            try:
                zoo.build_model(arch, (h, w, 1), 3)
                built = True
            except ValueError:
                built = False
            assert built != refused, (arch, h, w)


def test_image_size_too_small_is_one_line(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "shapes", n=3)
    run = edgeq(
        "train", "--data", data, "--image-size", "1x1", "--epochs", "1", "--out", tmp_path / "t.keras"
    )
    assert_clean_error(run, EXIT_BAD_INPUT, "cannot take 1x1 images", "at least 2x2")
    assert "--image-size" in run.stderr.splitlines()[-1]
    assert not (tmp_path / "t.keras").exists()


def test_image_size_too_large_is_one_line_before_any_image_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq.models import check_training_fits

    data = make_folder(tmp_path / "shapes", n=3)
    run = edgeq(
        "train", "--data", data, "--image-size", "4000x4000", "--epochs", "1", "--out", tmp_path / "t.keras"
    )
    assert_clean_error(run, EXIT_BAD_INPUT, "4000x4000x3", "needs", "is available")
    assert not (tmp_path / "t.keras").exists()

    # Checked from the file headers: no image is decoded, resized or converted.
    def no_pixels(*a: object, **k: object) -> None:
        raise AssertionError("pixels read before the memory check")

    monkeypatch.setattr(Image.Image, "load", no_pixels)
    shape = peek_dataset(data, image_size=(4000, 4000))
    assert (shape.count, shape.input_shape, shape.num_classes) == (9, (4000, 4000, 3), 3)
    with pytest.raises(UserInputError, match="needs"):
        check_training_fits(("teacher", "student"), shape)
    check_training_fits(("teacher", "student"), peek_dataset(data, image_size=(32, 32)))


def test_dataset_memory_is_checked_before_its_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.data import memory

    data = make_folder(tmp_path / "shapes", n=3)
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)  # 1 MiB left
    converted: list[str] = []
    real = Image.Image.convert
    monkeypatch.setattr(
        Image.Image, "convert", lambda im, *a, **k: converted.append("x") or real(im, *a, **k)
    )
    with pytest.raises(UserInputError) as e:
        load_dataset(data, image_size=(128, 128))
    assert "needs" in e.value.message and "1 MiB is available" in e.value.message
    assert "--image-size" in e.value.hint and converted == []
    assert load_dataset(data, image_size=(8, 8)).input_shape == (8, 8, 3)


# ------------------------------------------------------------------------------------------------
# Item 19: what a device must do, in the sidecar; labels with the model


def test_mixed_grey_and_colour_folder_is_detected_recorded_and_warned(tmp_path: Path) -> None:
    from edgeq.export.sidecar import read_sidecar

    ds = load_dataset(make_folder(tmp_path / "mixed", n=6, grey_every=2), image_size=(16, 16))
    assert ds.input_shape == (16, 16, 3)
    assert len(ds.warnings) == 1 and "mixes 9 greyscale and 9 colour images" in ds.warnings[0]
    assert ds.summary()["warnings"] == list(ds.warnings)
    model = export_model(ds, tmp_path / "model")
    pre = read_sidecar(model)["preprocessing"]  # type: ignore[index]
    assert pre["colour_mode"] == "RGB" and "mixes" in pre["warning"]

    grey = load_dataset(make_folder(tmp_path / "grey", n=4, grey_every=1), image_size=(16, 16))
    assert grey.input_shape == (16, 16, 1) and grey.warnings == ()
    assert grey.spec["preprocessing"]["colour_mode"] == "L"  # type: ignore[index]


def test_sidecar_records_what_a_device_must_do(folder_model: tuple[Path, Path, Dataset]) -> None:
    """A device that follows the sidecar alone turns a raw image into the exact int8 input edgeq feeds."""
    from edgeq.export.sidecar import read_sidecar
    from edgeq.export.tflite_model import describe
    from edgeq.runner.measure import quantize

    model, data, ds = folder_model
    side = read_sidecar(model)
    assert side is not None
    pre = side["preprocessing"]
    info = describe(model)
    inp = info.tensor(info.inputs[0])
    assert pre["image_size"] == [24, 24] and pre["colour_mode"] == "RGB" and pre["layout"] == "NHWC"
    assert pre["resize"] == "bilinear" and pre["divide_by"] == 255.0
    assert pre["quantize"]["scale"] == inp.scale[0] and pre["quantize"]["zero_point"] == inp.zero_point[0]
    assert side["labels"] == ["blue", "green", "red"]

    # Replay the recorded steps on the raw files, as a device would.
    files = sorted(data.rglob("*.png"), key=lambda f: (f.parent.name, f.name))
    h, w = pre["image_size"]
    raw = np.stack(
        [
            np.asarray(Image.open(f).convert(pre["colour_mode"]).resize((w, h), Image.Resampling.BILINEAR))
            for f in files
        ]
    ).astype(np.float32) / np.float32(pre["divide_by"])
    q = pre["quantize"]
    device = quantize(raw, q["scale"], q["zero_point"], np.int8)
    edgeq_input = quantize(
        load_dataset(data, image_size=(24, 24)).x_test, q["scale"], q["zero_point"], np.int8
    )
    rows = {r.tobytes() for r in device}
    assert all(r.tobytes() in rows for r in edgeq_input)


def test_labels_file_for_a_device(folder_model: tuple[Path, Path, Dataset], tmp_path: Path) -> None:
    from edgeq.export.sidecar import read_sidecar, sidecar_path, write_labels_file

    model, _, _ = folder_model
    dest = write_labels_file(model, tmp_path)
    assert dest == tmp_path / "model.labels.txt"
    assert dest.read_text() == "blue\ngreen\nred\n"

    # A sidecar whose labels do not fit the model's outputs is refused, not shipped.
    bad = tmp_path / "bad" / "model.tflite"
    bad.parent.mkdir()
    bad.write_bytes(model.read_bytes())
    side = read_sidecar(model)
    assert side is not None
    sidecar_path(bad).write_text(json.dumps({**side, "labels": [str(i) for i in range(10)]}))
    with pytest.raises(UserInputError, match="10 labels for 3 outputs"):
        write_labels_file(bad, tmp_path)
    sidecar_path(bad).unlink()
    assert write_labels_file(bad, tmp_path) is None  # no sidecar, no labels


def test_deploy_ships_the_labels(folder_model: tuple[Path, Path, Dataset], tmp_path: Path) -> None:
    model, _, _ = folder_model
    run = edgeq("deploy", model, "--json", env={"EDGEQ_HOME": str(tmp_path / "home")})
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    labels = Path(res["labels"]["remote_path"])
    assert labels.name == "model.labels.txt" and labels.read_text() == "blue\ngreen\nred\n"
