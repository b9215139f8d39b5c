"""Datasets: the bundled default (scikit-learn's digits), `.npz` files and image folders."""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.data.datasets import Dataset, DataShape, Samples, load_dataset, peek_dataset, read_samples
from edgeq.data.preprocess import Preprocessing


@dataclass(frozen=True)
class DataOptions:
    """Where the data comes from and how it is split (same defaults in every command)."""

    source: str | None = None  # None = scikit-learn digits
    image_size: tuple[int, int] = (32, 32)
    seed: int = 0

    def load(self) -> Dataset:
        return load_dataset(self.source, image_size=self.image_size, seed=self.seed)

    def peek(self) -> DataShape:
        """How many images of which shape the data holds, without reading the pixels."""
        return peek_dataset(self.source, image_size=self.image_size)


__all__ = [
    "DataOptions",
    "DataShape",
    "Dataset",
    "Preprocessing",
    "Samples",
    "load_dataset",
    "peek_dataset",
    "read_samples",
]
