"""Stochastic depth for the model families' residual branches (fastzoo.layers.drop_path: the same per-sample
draw as timm's DropPath, so a fastzoo model and its timm oracle seeded alike drop the same samples), and timm's
per-block rate schedule."""
from ..layers import drop_path  # noqa: F401


def linear_rates(rate: float, n: int):
    """timm's ResNet rule: block i of n drops with rate * i / (n - 1), 0 for the first, `rate` for the last."""
    return [rate * i / max(n - 1, 1) for i in range(n)]
