"""The inverted-residual blocks with torchvision's layout (`block` = Sequential of ConvBnAct / SE
children), so torchvision MobileNetV3 / EfficientNet state_dicts load unchanged. Eval mode runs the
whole block as one fused op (mbconv / fused_mbconv) with BN folded; train mode runs the children."""
from typing import Optional

import torch
from torch import nn

from .. import ops
from .conv_bn_act import ConvBnAct
from .squeeze_excite import SqueezeExcite


def drop_path(x, p: float, training: bool):
    """Stochastic depth per sample (torchvision's stochastic_depth, mode="row")."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask.div_(keep)


class MBConv(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, expand_chs=None, se_chs: Optional[int] = None,
                 act="relu", se_act="relu", se_gate="hardsigmoid", drop_path_rate=0.0, bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        expand_chs = expand_chs or in_chs
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers = []
        self.has_expand = expand_chs != in_chs
        if self.has_expand:
            layers.append(ConvBnAct(in_chs, expand_chs, 1, act=act, **bn))
        layers.append(ConvBnAct(expand_chs, expand_chs, kernel_size, stride, groups=expand_chs, act=act, **bn))
        self.has_se = se_chs is not None
        if self.has_se:
            layers.append(SqueezeExcite(expand_chs, se_chs, se_act, se_gate))
        layers.append(ConvBnAct(expand_chs, out_chs, 1, act=None, **bn))
        self.block = nn.Sequential(*layers)
        self.stride, self.act = stride, act
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        if self.training:
            y = self.block(x)
            return x + drop_path(y, self.drop_path_rate, True) if self.use_res_connect else y
        parts = list(self.block)
        expand = parts.pop(0).folded()[:3] if self.has_expand else (None, None, None)
        dw = parts.pop(0).folded()[:3]
        se = parts.pop(0) if self.has_se else None
        se_args = (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias) if se else (None,) * 4
        project = parts.pop(0).folded()[:3]
        return ops.mbconv(x, *expand, *dw, *se_args, *project, self.stride, self.act,
                          se.act if se else "relu", se.gate if se else "hardsigmoid", self.use_res_connect)


class FusedMBConv(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, expand_chs=None, act="silu", drop_path_rate=0.0,
                 bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        expand_chs = expand_chs or in_chs
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.has_project = expand_chs != in_chs
        if self.has_project:
            layers = [ConvBnAct(in_chs, expand_chs, kernel_size, stride, act=act, **bn),
                      ConvBnAct(expand_chs, out_chs, 1, act=None, **bn)]
        else:
            layers = [ConvBnAct(in_chs, out_chs, kernel_size, stride, act=act, **bn)]
        self.block = nn.Sequential(*layers)
        self.stride, self.act = stride, act
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        if self.training:
            y = self.block(x)
            return x + drop_path(y, self.drop_path_rate, True) if self.use_res_connect else y
        conv = self.block[0].folded()[:3]
        project = self.block[1].folded()[:3] if self.has_project else (None, None, None)
        return ops.fused_mbconv(x, *conv, *project, self.stride, self.act, self.use_res_connect)
