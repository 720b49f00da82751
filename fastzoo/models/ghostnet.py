"""GhostNet 1.0 (Han et al. 2020) after timm's ghostnet_100, built from fastzoo layers: every conv + BN (+ ReLU) is
a ConvBnAct (the ghost modules' primary 1x1 conv and cheap depthwise op, the stride-2 depthwise conv, the
shortcut's dw and pw), the squeeze-excite a SqueezeExcite (ReLU, hard-sigmoid gate). The module names follow
timm's (conv_stem, blocks, ghost1.primary_conv, ghost1.cheap_operation, conv_dw, se, ghost2, shortcut, conv_head,
classifier); timm's state_dicts load through an order-and-shape remap (its flat conv_dw/bn_dw, conv_stem/bn1 and
se.conv_reduce/conv_expand become ConvBnAct and SqueezeExcite children, in the same order).

Eval mode runs the primary convs as pwconv_bn_act, the cheap ops and stride-2 dw convs as dwconv_bn_act, SE as
squeeze_excite, the shortcut's pw as pwconv_bn_act with the block's residual add fused in, and the stem as one
conv with BN folded."""
import math

import torch
from torch import nn

from ..layers import ConvBnAct, Linear, SqueezeExcite
from ._common import finish, make_divisible, to_channels_last_for_inference
from ._registry import register_model
from ._weights import remap_by_order

# Stages of bottlenecks (kernel, expansion channels, out channels, SE ratio, stride): the paper's table 1.
GHOSTNET = [
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)], [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)], [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [(3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)],
]


class GhostModule(nn.Module):
    """out = cat(primary(x), cheap(primary(x)))[:, :out_chs]: a 1x1 conv makes half the channels, a 3x3
    depthwise conv (the cheap op) the other half."""

    def __init__(self, in_chs, out_chs, kernel_size=1, ratio=2, dw_size=3, stride=1, act="relu"):
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        self.primary_conv = ConvBnAct(in_chs, init_chs, kernel_size, stride, kernel_size // 2, act=act)
        self.cheap_operation = ConvBnAct(init_chs, init_chs * (ratio - 1), dw_size, 1, dw_size // 2,
                                         groups=init_chs, act=act)

    def forward(self, x):
        x1 = self.primary_conv(x)
        out = torch.cat([x1, self.cheap_operation(x1)], dim=1)
        return out if out.shape[1] == self.out_chs else out[:, :self.out_chs]


class GhostBottleneck(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, dw_kernel_size=3, stride=1, se_ratio=0.0, act="relu"):
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, act=act)
        self.conv_dw = (ConvBnAct(mid_chs, mid_chs, dw_kernel_size, stride, groups=mid_chs, act=None)
                        if stride > 1 else None)
        self.se = (SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4), "relu", "hardsigmoid")
                   if se_ratio else None)
        self.ghost2 = GhostModule(mid_chs, out_chs, act=None)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                ConvBnAct(in_chs, in_chs, dw_kernel_size, stride, groups=in_chs, act=None),
                ConvBnAct(in_chs, out_chs, 1, act=None))

    def forward(self, x):
        y = self.ghost1(x)
        if self.conv_dw is not None:
            y = self.conv_dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.ghost2(y)
        if len(self.shortcut) == 0:
            return y + x
        return self.shortcut[1](self.shortcut[0](x), residual=y)  # pw + BN + residual add, fused in eval mode


class GhostNet(nn.Module):
    def __init__(self, stages=GHOSTNET, num_classes=1000, in_chans=3, width_mult=1.0, dropout=0.2,
                 head_channels=1280):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 4)  # noqa: E731
        cin = ch(16)
        self.conv_stem = ConvBnAct(in_chans, cin, 3, 2, act="relu")
        blocks = []
        for stage in stages:
            layers = []
            for k, exp, c, se, s in stage:
                layers.append(GhostBottleneck(cin, ch(exp), ch(c), k, s, se))
                cin = ch(c)
            blocks.append(nn.Sequential(*layers))
        self.num_features = ch(stages[-1][-1][1])
        blocks.append(nn.Sequential(ConvBnAct(cin, self.num_features, 1, act="relu")))
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, head_channels, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = Linear(head_channels, num_classes)

    def forward_features(self, x):
        return self.blocks(self.conv_stem(to_channels_last_for_inference(self, x)))

    def forward(self, x):
        x = self.act2(self.conv_head(self.global_pool(self.forward_features(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def _timm_remap(sd, model):
    """timm's ghostnet layout pairs with fastzoo's in order and shape (see the module docstring)."""
    return remap_by_order(sd, model)


@register_model("ghostnet_100")
def ghostnet(weights=None, **kwargs):
    """GhostNet; width_mult scales the channels (timm's ghostnet_050 / ghostnet_130 are width_mult 0.5 / 1.3)."""
    return finish(GhostNet(**kwargs), weights, remaps=(_timm_remap,))
