"""ResNet V2, pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks"): bottleneck blocks
BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 + identity, the projection shortcut reading the pre-activated input, one
BN-ReLU after the last stage. As in timm (and the fb.resnet.torch / resnet-1k-layers code) the stride sits on the
3x3 conv. The layout is timm's resnetv2_50 / 101 / 152 (stem.conv, stages.i.blocks.j with norm1..3, conv1..3,
downsample.conv; norm; head.fc a 1x1 conv), the plain BatchNorm pre-activation models (not BiT's StdConv +
GroupNorm), so their state_dicts load unchanged.

Eval mode: each block's input BN + ReLU (norm1) runs as one folded multiply-add + ReLU (its input is a
residual sum, so there is no conv to fold it into); norm2 and norm3 fold onto the OUTPUT of conv1 / conv2 (the
only reader of each), so conv1 runs pwconv_bn_act with norm2 + ReLU, conv2 one 3x3 conv with norm3 folded + ReLU,
conv3 pwconv_bn_act with the residual add fused; stride-1 projections run pwconv_bn_act (scale 1), strided ones
one conv. Train mode runs the same order unfused.

drop_path_rate: stochastic depth on each block's residual branch in train mode, the rate rising linearly over
the blocks from 0 to drop_path_rate (timm's calculate_drop_path_rates), one per-sample draw per block in timm's
order, so timm's resnetv2 with the same rate and seed drops the same samples. Eval mode is unaffected."""
import torch
import torch.nn.functional as F
from torch import nn


from ._common import finish, to_channels_last_for_inference
from ._conv_bn import bn_act, conv_bn_act
from ._drop_path import drop_path
from ._registry import register_model


class DownsampleConv(nn.Module):
    def __init__(self, in_chs, out_chs, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)


class PreActBottleneck(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, drop_path_rate=0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        mid = out_chs // 4
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else None
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_chs, 1, bias=False)

    def forward(self, x):
        x_preact = bn_act(self, self.norm1, x, "relu")
        shortcut = x if self.downsample is None else conv_bn_act(self, self.downsample.conv, None, x_preact,
                                                                  "identity")
        y = conv_bn_act(self, self.conv1, self.norm2, x_preact, "relu")
        y = conv_bn_act(self, self.conv2, self.norm3, y, "relu")
        if self.training and self.drop_path_rate > 0:
            y = conv_bn_act(self, self.conv3, None, y, "identity")
            return drop_path(y, self.drop_path_rate, True) + shortcut
        return conv_bn_act(self, self.conv3, None, y, "identity", shortcut)


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth, drop_path_rates=None):
        super().__init__()
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(*[PreActBottleneck(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1,
                                                       rates[i]) for i in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class ClassifierHead(nn.Module):
    def __init__(self, in_chs, num_classes):
        super().__init__()
        self.fc = nn.Conv2d(in_chs, num_classes, 1)


class ResNetV2(nn.Module):
    def __init__(self, layers, num_classes=1000, in_chans=3, dropout=0.0, drop_path_rate=0.0):
        super().__init__()
        self.dropout = dropout
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False))
        self.stem.add_module("pool", nn.MaxPool2d(3, 2, 1))
        stages, prev = [], 64
        # linear in the block index, 0 at the first block, drop_path_rate at the last (timm's schedule)
        dpr = torch.linspace(0, drop_path_rate, sum(layers), device="cpu").split(list(layers))
        for i, depth in enumerate(layers):
            out = 256 * 2 ** i
            stages.append(ResNetStage(prev, out, 1 if i == 0 else 2, depth, dpr[i].tolist()))
            prev = out
        self.stages = nn.Sequential(*stages)
        self.num_features = prev
        self.norm = nn.BatchNorm2d(prev)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = ClassifierHead(prev, num_classes)

    def forward_features(self, x):
        x = self.stages(self.stem(to_channels_last_for_inference(self, x)))
        return bn_act(self, self.norm, x, "relu")

    def forward(self, x):
        x = F.dropout(self.avgpool(self.forward_features(x)), self.dropout, self.training)
        return self.head.fc(x).flatten(1)


DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _variant(depth):
    name = f"resnetv2_{depth}"

    def build(weights=None, **kwargs):
        return finish(ResNetV2(DEPTHS[depth], **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"Pre-activation ResNet-{depth} (timm {name}); options num_classes, in_chans, dropout, "
                     f"drop_path_rate, weights.")
    globals()[name] = register_model()(build)


for _depth in DEPTHS:
    _variant(_depth)
