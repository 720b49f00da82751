"""Inception-ResNet-v2 (Szegedy et al. 2017): the Inception-v4 stem, 10 x Inception-ResNet-A (Block35),
reduction A, 20 x Inception-ResNet-B (Block17), reduction B, 10 x Inception-ResNet-C (Block8, the last without
ReLU), a 1x1 conv to 1536 channels. Residual branches are scaled (0.17, 0.10, 0.20) before the add. The layout
is timm's inception_resnet_v2 (conv2d_1a .. conv2d_7b, mixed_5b / 6a / 7a, repeat / repeat_1 / repeat_2, block8,
classif; each conv block .conv + .bn with BN eps 1e-3), so its state_dicts load unchanged. Smallest input 75x75.

Eval mode: every conv + BN + ReLU runs folded (1x1 stride-1 convs as pwconv_bn_act, the others -- 3x3, 5x5,
1x7 / 7x1, 1x3 / 3x1, strided -- as one conv with folded weight and bias); each residual block's 1x1 up-projection
(a conv with bias), its scale, the residual add and the ReLU run as one pwconv_bn_act (scale = block scale,
shift = bias * scale, residual = block input)."""
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..layers import Linear
from ..layers.bn_fold import FoldCache
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._registry import register_model

EPS = 1e-3


class ConvNormAct(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=EPS)

    def forward(self, x):
        return conv_bn_act(self, self.conv, self.bn, x, "relu")


C = ConvNormAct


class Mixed_5b(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = C(192, 96, 1)
        self.branch1 = nn.Sequential(C(192, 48, 1), C(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(C(192, 64, 1), C(64, 96, 3, padding=1), C(96, 96, 3, padding=1))
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), C(192, 64, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _Residual(nn.Module):
    """act(conv2d(cat(branches(x))) * scale + x), the up-projection, scale, add and ReLU as one pwconv_bn_act."""

    def __init__(self, scale=1.0, relu=True):
        super().__init__()
        self.scale, self._relu, self._fold = scale, relu, FoldCache()

    def _branches(self, x):
        raise NotImplementedError

    def forward(self, x):
        out = self._branches(x)
        relu = self._relu
        if self.training:
            out = self.conv2d(out) * self.scale + x
            return F.relu(out) if relu else out
        w, s, b = self._fold.get((self.conv2d.weight, self.conv2d.bias), self._fold_scale)
        return ops.pwconv_bn_act(out, w, s, b, "relu" if relu else "identity", x)

    def _fold_scale(self):
        w = self.conv2d.weight
        scale = torch.full((w.shape[0],), float(self.scale), dtype=torch.float32, device=w.device)
        return w, scale, self.conv2d.bias.float() * scale

    def train(self, mode=True):
        self._fold.clear()
        return super().train(mode)


class Block35(_Residual):
    def __init__(self, scale=1.0):
        super().__init__(scale)
        self.branch0 = C(320, 32, 1)
        self.branch1 = nn.Sequential(C(320, 32, 1), C(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(C(320, 32, 1), C(32, 48, 3, padding=1), C(48, 64, 3, padding=1))
        self.conv2d = nn.Conv2d(128, 320, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed_6a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = C(320, 384, 3, 2)
        self.branch1 = nn.Sequential(C(320, 256, 1), C(256, 256, 3, padding=1), C(256, 384, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(_Residual):
    def __init__(self, scale=1.0):
        super().__init__(scale)
        self.branch0 = C(1088, 192, 1)
        self.branch1 = nn.Sequential(C(1088, 128, 1), C(128, 160, (1, 7), padding=(0, 3)),
                                     C(160, 192, (7, 1), padding=(3, 0)))
        self.conv2d = nn.Conv2d(384, 1088, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed_7a(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(C(1088, 256, 1), C(256, 384, 3, 2))
        self.branch1 = nn.Sequential(C(1088, 256, 1), C(256, 288, 3, 2))
        self.branch2 = nn.Sequential(C(1088, 256, 1), C(256, 288, 3, padding=1), C(288, 320, 3, 2))
        self.branch3 = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block8(_Residual):
    def __init__(self, scale=1.0, no_relu=False):
        super().__init__(scale, relu=not no_relu)
        self.branch0 = C(2080, 192, 1)
        self.branch1 = nn.Sequential(C(2080, 192, 1), C(192, 224, (1, 3), padding=(0, 1)),
                                     C(224, 256, (3, 1), padding=(1, 0)))
        self.conv2d = nn.Conv2d(448, 2080, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class InceptionResnetV2(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        self.num_features = 1536
        self.conv2d_1a = C(in_chans, 32, 3, 2)
        self.conv2d_2a = C(32, 32, 3)
        self.conv2d_2b = C(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = C(64, 80, 1)
        self.conv2d_4a = C(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, 2)
        self.mixed_5b = Mixed_5b()
        self.repeat = nn.Sequential(*[Block35(0.17) for _ in range(10)])
        self.mixed_6a = Mixed_6a()
        self.repeat_1 = nn.Sequential(*[Block17(0.10) for _ in range(20)])
        self.mixed_7a = Mixed_7a()
        self.repeat_2 = nn.Sequential(*[Block8(0.20) for _ in range(9)])
        self.block8 = Block8(no_relu=True)
        self.conv2d_7b = C(2080, self.num_features, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)
        self.classif = Linear(self.num_features, num_classes)

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
                     "mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8", "conv2d_7b"):
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.classif(self.head_drop(x))


@register_model("ens_adv_inception_resnet_v2")
def inception_resnet_v2(weights=None, **kwargs):
    """Inception-ResNet-v2, timm's layout; options num_classes, in_chans, dropout, weights."""
    return finish(InceptionResnetV2(**kwargs), weights)
