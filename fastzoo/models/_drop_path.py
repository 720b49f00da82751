"""Stochastic depth for the model families' residual branches: fastzoo.layers.drop_path, plus the p >= 1 case
(every sample dropped), where layers.drop_path would divide by keep = 0. The same per-sample draw either way,
as timm's DropPath, so a fastzoo model and its timm oracle seeded alike drop the same samples."""
from ..layers import drop_path as _layers_drop_path


def drop_path(x, p: float, training: bool):
    if training and p >= 1.0:
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(0.0)
    return _layers_drop_path(x, p, training)


def linear_rates(rate: float, n: int):
    """timm's ResNet rule: block i of n drops with rate * i / (n - 1), 0 for the first, `rate` for the last."""
    return [rate * i / max(n - 1, 1) for i in range(n)]
