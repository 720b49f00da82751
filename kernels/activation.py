"""Activation helper shared by every fastzoo Triton kernel.

The activation is a *runtime* int (codes below, same order as fastzoo/activations.py ACTIVATIONS and
csrc/include/fastzoo/activation.h), so one compiled kernel serves all eight activations: the if-chain is on a
uniform scalar, so there is no divergence, only a few extra instructions in the binary.
"""
import triton
import triton.language as tl

ACT_NAMES = ("identity", "relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu")
ACT_CODES = {name: i for i, name in enumerate(ACT_NAMES)}


def act_code(name: str) -> int:
    """The runtime code of an activation name (the caller validated the name)."""
    return ACT_CODES[name]


@triton.jit
def _clamp(v, lo, hi):
    """min(max(v, lo), hi) with NaN staying NaN, as in torch (tl.maximum / tl.minimum drop it by default)."""
    return tl.minimum(tl.maximum(v, lo, propagate_nan=tl.PropagateNan.ALL), hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def apply_act(v, ACT):
    """act(v) for a float32 tensor v; ACT is the activation code (runtime int or constexpr)."""
    if ACT == 1:  # relu
        v = tl.maximum(v, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 2:  # relu6
        v = _clamp(v, 0.0, 6.0)
    elif ACT == 3:  # hardswish
        v = v * (_clamp(v + 3.0, 0.0, 6.0) / 6.0)
    elif ACT == 4:  # hardsigmoid
        v = _clamp(v + 3.0, 0.0, 6.0) / 6.0
    elif ACT == 5:  # silu
        v = v / (1.0 + tl.exp(-v))
    elif ACT == 6:  # sigmoid
        v = 1.0 / (1.0 + tl.exp(-v))
    elif ACT == 7:  # gelu (exact, erf)
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    return v
