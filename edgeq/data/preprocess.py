"""The preprocessing a model's inputs go through: the same for training, for scoring test data on the
host, and for a device feeding its camera to the model (recorded in the model's sidecar).

Order: read the image → convert to ``colour_mode`` → resize to ``image_size`` (``resize``) → divide the
8-bit pixel values by ``divide_by`` (→ [0, 1] float32, NHWC) → quantize with the model input's scale
and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# PIL modes by channel count, and the modes that carry no colour.
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
CHANNELS = {mode: c for c, mode in MODES.items()}
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# ITU-R 601-2 luma, the weights PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become the float32 NHWC input of a model.

    ``resize`` is ``"bilinear"`` (PIL's ``Image.resize(..., BILINEAR)`` on the 8-bit image, as edgeq
    reads image folders) or ``"none"`` (arrays used at the size they have: digits, .npz files).
    ``divide_by`` maps stored pixel values to [0, 1]: 255 for 8-bit images, 16 for scikit-learn's
    digits, 1 for float arrays used as they are.
    """

    image_size: tuple[int, int]
    colour_mode: str
    resize: str = "bilinear"
    divide_by: float = 255.0

    @property
    def channels(self) -> int:
        return CHANNELS[self.colour_mode]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size[0], self.image_size[1], self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": "NHWC",
            "image_size": list(self.image_size),
            "colour_mode": self.colour_mode,
            "channels": self.channels,
            "resize": self.resize,
            "resize_library": "PIL" if self.resize != "none" else None,
            "divide_by": self.divide_by,
            "range": [0.0, 1.0],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Preprocessing:
        size = d.get("image_size") or (0, 0)
        return Preprocessing(
            image_size=(int(size[0]), int(size[1])),
            colour_mode=str(d.get("colour_mode") or "L"),
            resize=str(d.get("resize") or "bilinear"),
            divide_by=float(d.get("divide_by") or 255.0),
        )


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """NHWC float ``x`` with ``channels`` channels: grey is repeated into RGB, RGB becomes luma (the
    weights PIL uses), an alpha channel is dropped."""
    have = x.shape[-1]
    if have == channels:
        return x
    if have == 4:
        x, have = x[..., :3], 3
        if channels == 3:
            return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        return (x @ _LUMA)[..., None].astype(np.float32)
    if have == 1 and channels == 4:
        return np.concatenate([np.repeat(x, 3, axis=-1), np.ones_like(x)], axis=-1)
    if have == 3 and channels == 4:
        return np.concatenate([x, np.ones_like(x[..., :1])], axis=-1)
    raise ValueError(f"cannot convert {have} channels to {channels}")


def resize_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float NHWC ``x`` to ``size`` (H, W), channel by channel with PIL."""
    from PIL import Image

    h, w = size
    if x.shape[1:3] == (h, w):
        return x
    out = np.empty((x.shape[0], h, w, x.shape[3]), dtype=np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[3]):
            im = Image.fromarray(np.ascontiguousarray(x[i, :, :, c], dtype=np.float32), mode="F")
            out[i, :, :, c] = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
    return out


def fit_arrays(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Float NHWC ``x`` (already scaled to [0, 1]) in the shape ``pre`` gives a model."""
    return resize_images(to_channels(x, pre.channels), pre.image_size).astype(np.float32, copy=False)
