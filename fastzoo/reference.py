"""Reference implementations of every fastzoo op in plain PyTorch: the oracle the kernels are
tested against, the fallback backend, and what torch.onnx.export sees."""
from typing import Optional

import torch
import torch.nn.functional as F

from . import activations
from .memory_format import suggest_memory_format


def _vec(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).view(1, -1, 1, 1)


def _w2d(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], w.shape[1], 1, 1) if w.dim() == 2 else w


def dwconv_bn_act(x, weight, scale, shift, stride: int = 1, padding: int = -1, act: str = "identity"):
    k = weight.shape[-1]
    pad = k // 2 if padding < 0 else padding
    z = F.conv2d(x, weight, None, stride, pad, 1, x.shape[1])
    return activations.apply(act, z * _vec(scale, z) + _vec(shift, z))


def pwconv_bn_act(x, weight, scale, shift, act: str = "identity", residual: Optional[torch.Tensor] = None):
    z = F.conv2d(x, _w2d(weight)) * _vec(scale, x) + _vec(shift, x)
    if residual is not None:
        z = z + residual
    return activations.apply(act, z)


def squeeze_excite(x, w1, b1, w2, b2, act: str = "relu", gate: str = "hardsigmoid"):
    s = x.mean((2, 3), keepdim=True)
    s = activations.apply(act, F.conv2d(s, _w2d(w1), b1.to(x.dtype)))
    s = activations.apply(gate, F.conv2d(s, _w2d(w2), b2.to(x.dtype)))
    return x * s


def channel_shuffle(x, groups: int):
    n, c, h, w = x.shape
    out = x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    return out.contiguous(memory_format=suggest_memory_format(x))


def mbconv(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift,
           se_w1, se_b1, se_w2, se_b2, project_weight, project_scale, project_shift,
           stride: int = 1, act: str = "relu", se_act: str = "relu", se_gate: str = "hardsigmoid",
           residual: bool = False):
    h = x
    if expand_weight is not None:
        h = pwconv_bn_act(h, expand_weight, expand_scale, expand_shift, act)
    h = dwconv_bn_act(h, dw_weight, dw_scale, dw_shift, stride, -1, act)
    if se_w1 is not None:
        h = squeeze_excite(h, se_w1, se_b1, se_w2, se_b2, se_act, se_gate)
    return pwconv_bn_act(h, project_weight, project_scale, project_shift, "identity", x if residual else None)


def _kxk_conv(x, weight, stride: int, pad: int):
    """F.conv2d, in float32 for a bf16 / fp16 CPU x with one output column at stride 2: there torch 2.14.1's CPU
    conv (oneDNN, on an AMX Xeon) returns wrong values, errors the size of the outputs."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and stride > 1 \
            and (x.shape[3] + 2 * pad - weight.shape[3]) // stride == 0:
        return F.conv2d(x.float(), weight.float(), None, stride, pad).to(x.dtype)
    return F.conv2d(x, weight, None, stride, pad)


def fused_mbconv(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale, project_shift,
                 stride: int = 1, act: str = "silu", residual: bool = False):
    k = conv_weight.shape[-1]
    h = _kxk_conv(x, conv_weight, stride, k // 2)
    h = activations.apply(act, h * _vec(conv_scale, h) + _vec(conv_shift, h))
    if project_weight is None:
        return h + x if residual else h
    return pwconv_bn_act(h, project_weight, project_scale, project_shift, "identity", x if residual else None)
