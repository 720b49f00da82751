"""One small random argument tuple per op (used by the contract tests: opcheck, gradcheck, empty batch)."""
import torch

from helpers import bn_vectors, rand


def _bn(c, device, dtype):
    return bn_vectors(c, device, dtype)


def sample(name, device="cpu", dtype=torch.float32, n=2, fmt=torch.channels_last, grad=False):
    def r(*shape, **kw):
        t = rand(*shape, dtype=dtype, device=device, **kw)
        return t.requires_grad_() if grad else t

    def bn(c):
        return tuple(t.to(dtype).requires_grad_() if grad else t for t in _bn(c, device, torch.float32))

    x = rand(n, 6, 7, 5, dtype=dtype, device=device).contiguous(memory_format=fmt)
    if grad:
        x.requires_grad_()
    if name == "dwconv_bn_act":
        return (x, r(6, 1, 3, 3), *bn(6), 2, -1, "hardswish")
    if name == "pwconv_bn_act":
        return (x, r(4, 6, 1, 1), *bn(4), "silu", r(n, 4, 7, 5))
    if name == "squeeze_excite":
        return (x, r(3, 6, 1, 1), r(3), r(6, 3, 1, 1), r(6), "relu", "hardsigmoid")
    if name == "channel_shuffle":
        return (x, 3)
    if name == "mbconv":
        return (x, r(12, 6, 1, 1), *bn(12), r(12, 1, 5, 5), *bn(12), r(4, 12, 1, 1), r(4), r(12, 4, 1, 1), r(12),
                r(6, 12, 1, 1), *bn(6), 1, "hardswish", "relu", "hardsigmoid", True)
    if name == "fused_mbconv":
        return (x, r(12, 6, 3, 3), *bn(12), r(6, 12, 1, 1), *bn(6), 1, "silu", True)
    raise ValueError(name)
