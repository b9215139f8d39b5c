"""Built-in architectures: a float teacher CNN and a small student (≤ 1/4 of its parameters)."""

from edgeq.models.zoo import build_model, count_params, load_user_model

__all__ = ["build_model", "count_params", "load_user_model"]
