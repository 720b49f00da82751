"""The Triton kernels (fastzoo.kernels) as torch.library custom ops, namespace fastzoo_triton, so that
torch.compile and torch.export see them. Triton is imported on first call, not at fastzoo import."""
from typing import Optional

import torch
from torch import Tensor


def _kernels():
    from .. import kernels  # fastzoo.kernels, installed from kernels/
    return kernels


@torch.library.custom_op("fastzoo_triton::dwconv_bn_act", mutates_args=())
def dwconv_bn_act(x: Tensor, weight: Tensor, scale: Tensor, shift: Tensor, stride: int = 1, padding: int = -1,
                  act: str = "identity") -> Tensor:
    return _kernels().dwconv_bn_act(x, weight, scale, shift, stride, padding, act)


@torch.library.custom_op("fastzoo_triton::pwconv_bn_act", mutates_args=())
def pwconv_bn_act(x: Tensor, weight: Tensor, scale: Tensor, shift: Tensor, act: str = "identity",
                  residual: Optional[Tensor] = None) -> Tensor:
    return _kernels().pwconv_bn_act(x, weight, scale, shift, act, residual)


@torch.library.custom_op("fastzoo_triton::squeeze_excite", mutates_args=())
def squeeze_excite(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str = "relu",
                   gate: str = "hardsigmoid") -> Tensor:
    return _kernels().squeeze_excite(x, w1, b1, w2, b2, act, gate)


@torch.library.custom_op("fastzoo_triton::channel_shuffle", mutates_args=())
def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    return _kernels().channel_shuffle(x, groups)


@torch.library.custom_op("fastzoo_triton::mbconv", mutates_args=())
def mbconv(x: Tensor, expand_weight: Optional[Tensor], expand_scale: Optional[Tensor],
           expand_shift: Optional[Tensor], dw_weight: Tensor, dw_scale: Tensor, dw_shift: Tensor,
           se_w1: Optional[Tensor], se_b1: Optional[Tensor], se_w2: Optional[Tensor], se_b2: Optional[Tensor],
           project_weight: Tensor, project_scale: Tensor, project_shift: Tensor, stride: int = 1,
           act: str = "relu", se_act: str = "relu", se_gate: str = "hardsigmoid", residual: bool = False) -> Tensor:
    return _kernels().mbconv(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift,
                             se_w1, se_b1, se_w2, se_b2, project_weight, project_scale, project_shift,
                             stride, act, se_act, se_gate, residual)


@torch.library.custom_op("fastzoo_triton::fused_mbconv", mutates_args=())
def fused_mbconv(x: Tensor, conv_weight: Tensor, conv_scale: Tensor, conv_shift: Tensor,
                 project_weight: Optional[Tensor], project_scale: Optional[Tensor],
                 project_shift: Optional[Tensor], stride: int = 1, act: str = "silu",
                 residual: bool = False) -> Tensor:
    return _kernels().fused_mbconv(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale,
                                   project_shift, stride, act, residual)


OPS = {op._name: op for op in
       (dwconv_bn_act, pwconv_bn_act, squeeze_excite, channel_shuffle, mbconv, fused_mbconv)}
