"""Load a dataset and split it into stratified train / validation / test parts with a fixed seed.

Three sources:

* ``digits`` (the default): scikit-learn's bundled handwritten digits, 8×8 grayscale, no download;
* a ``.npz`` file with ``x`` (N×H×W or N×H×W×C), ``y`` (N integer labels) and optional ``labels``;
* a folder with one sub-folder per class holding images of any size, resized to ``image_size``.

Pixels are float32 in [0, 1] (``uint8`` data is divided by 255, digits by 16), NHWC. How they got
there is a :class:`~edgeq.data.preprocess.Preprocessing`, recorded in ``Dataset.spec`` (and from there
in a model's sidecar). The memory a dataset needs is checked before its pixels are read.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.data import memory
from edgeq.data.preprocess import CHANNELS, GREY_MODES, MODES, Preprocessing, fit_arrays
from edgeq.errors import UserInputError

DEFAULT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DIGITS = Preprocessing(image_size=(8, 8), colour_mode="L", resize="none", divide_by=16.0)
_NPZ_HINT = "save it with numpy.savez(path, x=images (N,H,W[,C]), y=labels (N,), labels=names)"
_FOLDER_HINT = "make one sub-folder per class, each holding image files (png, jpg, ...)"
# Copies of the float pixels alive while a dataset is split (the whole array and its three parts).
SPLIT_COPIES = 2


@dataclass(frozen=True)
class Dataset:
    """A dataset already split; ``x_*`` are float32 NHWC in [0, 1], ``y_*`` int64 class indices."""

    name: str
    labels: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    spec: dict[str, object] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.spec["preprocessing"])  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """sha256 over every split, so a result can be traced to the exact data it used."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "labels": list(self.labels),
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "sha256": self.fingerprint(),
            **self.spec,
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }


@dataclass(frozen=True)
class Samples:
    """A dataset as read, not split (test data for a model, or the input of :func:`load_dataset`)."""

    name: str
    labels: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    spec: dict[str, object]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataShape:
    """What a dataset holds, read without its pixels: ``count`` images of ``input_shape`` (H, W, C)."""

    name: str
    source: str  # digits, npz, folder
    count: int
    input_shape: tuple[int, int, int]
    num_classes: int

    @property
    def float32_bytes(self) -> int:
        h, w, c = self.input_shape
        return self.count * h * w * c * 4


def _path(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise UserInputError(
            f"dataset not found: {path}",
            "pass 'digits', a .npz file with x and y, or a folder with one sub-folder per class",
        )
    if not path.is_dir() and path.suffix != ".npz":
        raise UserInputError(
            f"unsupported dataset file: {path} (expected a .npz file or a folder)",
            "save arrays with numpy.savez(path, x=images, y=labels) or use an image folder",
        )
    return path


def is_digits(source: str | Path | None) -> bool:
    return source is None or str(source) == "digits"


def peek_dataset(source: str | Path | None = None, *, image_size: tuple[int, int] = (32, 32)) -> DataShape:
    """How many images of which shape ``source`` gives, without reading any pixels (for memory and
    architecture checks before a long job starts)."""
    if is_digits(source):
        return DataShape("digits", "digits", 1797, DIGITS.input_shape, 10)
    path = _path(source)  # type: ignore[arg-type]
    if path.is_dir():
        files, labels = _folder_files(path)
        mode, _, _ = _folder_mode(files)
        size = (image_size[0], image_size[1], CHANNELS[mode])
        return DataShape(path.name, "folder", len(files), size, len(labels))
    shape, _ = _npz_header(path)
    if len(shape) == 3:
        shape = (*shape, 1)
    try:
        with np.load(path, allow_pickle=False) as f:
            classes = len(np.unique(f["y"]))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, EOFError):
        classes = -1
    if len(shape) != 4 or classes < 0:
        _npz(path)  # the full reader names the problem
    size = (int(shape[1]), int(shape[2]), int(shape[3]))
    return DataShape(path.stem, "npz", int(shape[0]), size, classes)


def read_samples(
    source: str | Path | None = None,
    *,
    image_size: tuple[int, int] = (32, 32),
    colour_mode: str | None = None,
    fit: bool = False,
    copies: int = 1,
) -> Samples:
    """Every sample of ``source`` as float32 NHWC in [0, 1], in file order (folders: class by class).

    ``colour_mode`` ("L", "RGB") forces the images' mode (else colour if any image has colour);
    with ``fit``, array sources (digits, .npz) are also resized to ``image_size`` and converted to
    ``colour_mode``, as a model trained at another size needs. ``copies`` is how many float copies
    of the pixels the caller will hold (checked against the available memory before reading).
    """
    warnings: list[str] = []
    if is_digits(source):
        x, y, labels = _digits()
        name, pre = "digits", DIGITS
        spec: dict[str, object] = {"source": "digits"}
    else:
        path = _path(source)  # type: ignore[arg-type]
        name = path.name if path.is_dir() else path.stem
        if path.is_dir():
            x, y, labels, pre, warnings = _image_folder(path, image_size, colour_mode, copies)
            spec = {"source": "folder", "path": str(path.resolve()), "image_size": list(image_size)}
        else:
            x, y, labels, pre = _npz(path, copies)
            spec = {"source": "npz", "path": str(path.resolve())}
    if fit and (x.shape[1:3] != tuple(image_size) or (colour_mode and pre.colour_mode != colour_mode)):
        target = Preprocessing(
            image_size=(int(image_size[0]), int(image_size[1])),
            colour_mode=colour_mode or pre.colour_mode,
            resize="bilinear" if x.shape[1:3] != tuple(image_size) else pre.resize,
            divide_by=pre.divide_by,
        )
        n, (h, w), c = len(x), target.image_size, target.channels
        memory.require(
            n * h * w * c * 4 * (copies + 1),
            f"{name} as {n} images of {h}x{w}x{c}",
            "score the model on fewer images",
        )
        x, pre = fit_arrays(x, target), target
    spec["preprocessing"] = pre.to_dict()
    # The values the model sees (float arrays from a .npz are used as they are, not always in [0, 1]).
    spec["value_range"] = [float(x.min()), float(x.max())] if x.size else [0.0, 0.0]
    return Samples(name, labels, x, y, spec, tuple(warnings))


def load_dataset(
    source: str | Path | None = None,
    *,
    image_size: tuple[int, int] = (32, 32),
    seed: int = DEFAULT_SEED,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    colour_mode: str | None = None,
) -> Dataset:
    """Load ``source`` (``None``/``"digits"``, a ``.npz`` path or an image folder) and split it.

    >>> ds = load_dataset()                     # scikit-learn digits
    >>> ds = load_dataset("data/cats_dogs")     # one sub-folder per class
    """
    s = read_samples(source, image_size=image_size, colour_mode=colour_mode, copies=SPLIT_COPIES)
    spec = dict(s.spec)
    spec.update({"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction})
    return _split(s.name, s.x, s.y, s.labels, seed, val_fraction, test_fraction, spec, s.warnings)


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    return x, y, tuple(str(i) for i in range(10))


def _npz_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the .npz's ``x`` without reading it."""
    try:
        with zipfile.ZipFile(path) as z, z.open("x.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
            return tuple(int(d) for d in shape), dtype
    except KeyError:
        _npz(path)  # names what is missing
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"cannot read {path.name} as a .npz file: {exc}", _NPZ_HINT) from exc


def _npz(path: Path, copies: int = 1) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], Preprocessing]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise UserInputError(
                    f"{path.name} has no {' and no '.join(repr(k) for k in missing)} array "
                    f"(found: {', '.join(sorted(keys)) or 'nothing'})",
                    _NPZ_HINT,
                )
            shape, dtype = _npz_header(path)
            n_values = int(np.prod(shape)) if shape else 0
            memory.require(
                n_values * (dtype.itemsize + 4 * copies),
                f"{path.name} ({'x'.join(map(str, shape))} {dtype} values, as float32)",
                "use fewer or smaller images in the .npz",
            )
            x, y = f["x"], f["y"]
            names = f["labels"] if "labels" in keys else None
    except UserInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"cannot read {path.name} as a .npz file: {exc}", _NPZ_HINT) from exc

    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or min(x.shape[1:3]) < 1:
        raise UserInputError(
            f"{path.name}: x has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4",
            _NPZ_HINT,
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise UserInputError(
            f"{path.name}: y has shape {y.shape} but x has {x.shape[0]} samples; expected y of shape "
            f"({x.shape[0]},)",
            _NPZ_HINT,
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise UserInputError(f"{path.name}: y has dtype {y.dtype}; expected integer class labels", _NPZ_HINT)
    if x.dtype == np.uint8:
        xf, divide_by = x.astype(np.float32) / 255.0, 255.0
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        xf, divide_by = x.astype(np.float32), 1.0
        if not np.all(np.isfinite(xf)):
            raise UserInputError(f"{path.name}: x contains NaN or infinite values", "clean the data")
    else:
        raise UserInputError(f"{path.name}: x has dtype {x.dtype}; expected numbers", _NPZ_HINT)

    classes = np.unique(y)
    index = {int(c): i for i, c in enumerate(classes)}
    y_idx = np.array([index[int(v)] for v in y], dtype=np.int64)
    if names is not None:
        if names.ndim != 1 or len(names) != len(classes):
            raise UserInputError(
                f"{path.name}: labels has {names.size} entries but y has {len(classes)} classes",
                "give one name per class, in the order of the sorted class values",
            )
        labels = tuple(str(n) for n in names)
    else:
        labels = tuple(str(int(c)) for c in classes)
    pre = Preprocessing(
        image_size=(int(x.shape[1]), int(x.shape[2])),
        colour_mode=MODES[int(x.shape[3])],
        resize="none",
        divide_by=divide_by,
    )
    return xf, y_idx, labels, pre


def _folder_files(path: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserInputError(f"{path} has no class sub-folders", _FOLDER_HINT)
    files: list[tuple[Path, int]] = []
    for i, d in enumerate(class_dirs):
        images = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserInputError(f"class folder {d} has no images", _FOLDER_HINT)
        files.extend((f, i) for f in images)
    return files, tuple(d.name for d in class_dirs)


def _folder_mode(files: list[tuple[Path, int]]) -> tuple[str, int, int]:
    """("RGB" if any image has colour else "L", how many grey images, how many colour ones), from the
    image headers only."""
    from PIL import Image, UnidentifiedImageError

    modes: Counter[str] = Counter()
    for f, _ in files:
        try:
            with Image.open(f) as im:
                modes[im.mode] += 1
        except (UnidentifiedImageError, OSError) as exc:
            raise UserInputError(f"cannot read image {f}: {exc}", "remove or replace the file") from exc
    grey = sum(n for m, n in modes.items() if m in GREY_MODES)
    colour = sum(modes.values()) - grey
    return ("RGB" if colour else "L"), grey, colour


def _image_folder(
    path: Path, size: tuple[int, int], colour_mode: str | None, copies: int
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], Preprocessing, list[str]]:
    from PIL import Image, UnidentifiedImageError

    files, labels = _folder_files(path)
    found, grey, colour = _folder_mode(files)
    mode = colour_mode or found
    warnings = []
    if colour_mode is None and grey and colour:
        warnings.append(
            f"{path.name} mixes {grey} greyscale and {colour} colour images: all are read as RGB "
            "(grey copied into 3 channels), so the model takes colour input and a device must feed it RGB"
        )
    h, w = size
    c = CHANNELS[mode]
    memory.require(
        len(files) * h * w * c * 4 * copies,
        f"{path.name} as {len(files)} images of {h}x{w}x{c} (float32)",
        "pass a smaller --image-size, or use fewer images",
    )
    x = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                small = im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserInputError(f"cannot read image {f}: {exc}", "remove or replace the file") from exc
        x[i] = np.asarray(small, dtype=np.float32).reshape(h, w, c) / 255.0
    y = np.array([k for _, k in files], dtype=np.int64)
    pre = Preprocessing(image_size=(h, w), colour_mode=mode, resize="bilinear", divide_by=255.0)
    return x, y, labels, pre, warnings


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    labels: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    spec: dict[str, object],
    warnings: tuple[str, ...] = (),
) -> Dataset:
    from sklearn.model_selection import train_test_split

    hint = "give at least two classes with a few samples each"
    if len(labels) < 2:
        raise UserInputError(f"dataset {name!r} has a single class ({labels[0]!r}); need at least two", hint)
    counts = np.bincount(y, minlength=len(labels))
    if counts.min() < 3:
        small = labels[int(counts.argmin())]
        raise UserInputError(
            f"class {small!r} of dataset {name!r} has {counts.min()} sample(s); need at least 3 per class "
            "for a stratified train/val/test split",
            "add samples to that class or remove it",
        )
    n = len(y)
    n_test = max(len(labels), round(n * test_fraction))
    n_val = max(len(labels), round(n * val_fraction))
    if n - n_test - n_val < len(labels):
        raise UserInputError(f"dataset {name!r} has only {n} samples; too few to split", hint)
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=y[rest], random_state=seed)
    return Dataset(
        name=name,
        labels=labels,
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        spec=spec,
        warnings=warnings,
    )
