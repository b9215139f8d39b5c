"""Datasets: the bundled default (scikit-learn's digits), `.npz` files and image folders."""

from edgeq.data.datasets import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
