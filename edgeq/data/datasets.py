"""Load a dataset and split it into stratified train / validation / test parts with a fixed seed.

Three sources:

* ``digits`` (the default): scikit-learn's bundled handwritten digits, 8×8 grayscale, no download;
* a ``.npz`` file with ``x`` (N×H×W or N×H×W×C), ``y`` (N integer labels) and optional ``labels``;
* a folder with one sub-folder per class holding images of any size, resized to ``image_size``.

Pixels are float32 in [0, 1] (``uint8`` data is divided by 255, digits by 16), NHWC.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.errors import UserInputError

DEFAULT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

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
        }


def load_dataset(
    source: str | Path | None = None,
    *,
    image_size: tuple[int, int] = (32, 32),
    seed: int = DEFAULT_SEED,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load ``source`` (``None``/``"digits"``, a ``.npz`` path or an image folder) and split it.

    >>> ds = load_dataset()                     # scikit-learn digits
    >>> ds = load_dataset("data/cats_dogs")     # one sub-folder per class
    """
    if source is None or str(source) == "digits":
        x, y, labels, name = _digits()
        spec: dict[str, object] = {"source": "digits"}
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserInputError(
                f"dataset not found: {path}",
                "pass 'digits', a .npz file with x and y, or a folder with one sub-folder per class",
            )
        if path.is_dir():
            x, y, labels = _image_folder(path, image_size)
            spec = {"source": "folder", "path": str(path), "image_size": list(image_size)}
        elif path.suffix == ".npz":
            x, y, labels = _npz(path)
            spec = {"source": "npz", "path": str(path)}
        else:
            raise UserInputError(
                f"unsupported dataset file: {path} (expected a .npz file or a folder)",
                "save arrays with numpy.savez(path, x=images, y=labels) or use an image folder",
            )
        name = path.stem if path.is_file() else path.name
    spec.update({"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction})
    return _split(name, x, y, labels, seed, val_fraction, test_fraction, spec)


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int64)
    return x, y, tuple(str(i) for i in range(10)), "digits"


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    hint = "save it with numpy.savez(path, x=images (N,H,W[,C]), y=labels (N,), labels=names)"
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise UserInputError(
                    f"{path.name} has no {' and no '.join(repr(k) for k in missing)} array "
                    f"(found: {', '.join(sorted(keys)) or 'nothing'})",
                    hint,
                )
            x, y = f["x"], f["y"]
            names = f["labels"] if "labels" in keys else None
    except UserInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"cannot read {path.name} as a .npz file: {exc}", hint) from exc

    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or min(x.shape[1:3]) < 1:
        raise UserInputError(
            f"{path.name}: x has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C in 1, 3, 4",
            hint,
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise UserInputError(
            f"{path.name}: y has shape {y.shape} but x has {x.shape[0]} samples; expected y of shape "
            f"({x.shape[0]},)",
            hint,
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise UserInputError(f"{path.name}: y has dtype {y.dtype}; expected integer class labels", hint)
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        xf = x.astype(np.float32)
        if not np.all(np.isfinite(xf)):
            raise UserInputError(f"{path.name}: x contains NaN or infinite values", "clean the data")
    else:
        raise UserInputError(f"{path.name}: x has dtype {x.dtype}; expected numbers", hint)

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
    return xf, y_idx, labels


def _image_folder(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    hint = "make one sub-folder per class, each holding image files (png, jpg, ...)"
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserInputError(f"{path} has no class sub-folders", hint)
    files: list[tuple[Path, int]] = []
    for i, d in enumerate(class_dirs):
        images = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserInputError(f"class folder {d} has no images", hint)
        files.extend((f, i) for f in images)

    opened: list[Image.Image] = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                opened.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise UserInputError(f"cannot read image {f}: {exc}", "remove or replace the file") from exc
    # Colour if any image has colour; otherwise keep one channel.
    colour = any(im.mode not in ("1", "L", "LA", "I", "I;16", "F") for im in opened)
    mode = "RGB" if colour else "L"
    w, h = size[1], size[0]
    arrays = [np.asarray(im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)) for im in opened]
    x = np.stack(arrays).astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    y = np.array([c for _, c in files], dtype=np.int64)
    return x, y, tuple(d.name for d in class_dirs)


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    labels: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    spec: dict[str, object],
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
    )
