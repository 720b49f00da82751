"""DenseNet-121/161/169/201/264 (Huang et al. 2017) with torchvision's layout (features.conv0/norm0/pool0,
denseblock<i>.denselayer<j>.norm1/conv1/norm2/conv2, transition<i>.norm/conv/pool, norm5, classifier), which
timm's DenseNet shares; densenet264d is timm's deep-stem, growth-48 variant (stem conv0/norm0/conv1/norm1/
conv2/norm2). densenet264 is the paper's DenseNet-264 (growth 32, blocks 6/12/64/48).

Eval mode: each layer's pre-activation norm1 + ReLU is one folded multiply-add + ReLU; conv1 (1x1) with
norm2 + ReLU folded in runs pwconv_bn_act; conv2 (3x3) a plain conv; a transition pools before its 1x1
conv (they commute), so the conv runs pwconv_bn_act on a quarter of the pixels."""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import FusedSequential, bn_act, conv_bn_act
from ._registry import register_model

# growth rate, layers per dense block, deep stem (the paper's table 1; densenet161 / 264d as torchvision / timm)
CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), False),
    "densenet161": (48, (6, 12, 36, 24), False),
    "densenet169": (32, (6, 12, 32, 32), False),
    "densenet201": (32, (6, 12, 48, 32), False),
    "densenet264": (32, (6, 12, 64, 48), False),
    "densenet264d": (48, (6, 12, 64, 48), True),
}


class DenseLayer(nn.Module):
    def __init__(self, in_chs, growth_rate, bn_size, drop_rate=0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features):
        x = torch.cat(features, 1) if isinstance(features, (list, tuple)) else features
        x = bn_act(self, self.norm1, x, "relu")
        x = conv_bn_act(self, self.conv1, self.norm2, x, "relu")
        x = self.conv2(x)
        return F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0 else x


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, in_chs, growth_rate, bn_size, drop_rate=0.0):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop_rate))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        x = bn_act(self, self.norm, x, "relu")
        if self.training:
            return self.pool(self.conv(x))
        return conv_bn_act(self, self.conv, None, self.pool(x), "identity")  # 1x1 conv and avg-pool commute


class DenseNet(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=None, bn_size=4,
                 drop_rate=0.0, num_classes=1000, in_chans=3, deep_stem=False, dropout=0.0):
        super().__init__()
        c = num_init_features or 2 * growth_rate
        if deep_stem:  # timm's 'deep' stem: three 3x3 conv + BN + ReLU
            stem = [("conv0", nn.Conv2d(in_chans, growth_rate, 3, 2, 1, bias=False)),
                    ("norm0", nn.BatchNorm2d(growth_rate)), ("relu0", nn.ReLU(inplace=True)),
                    ("conv1", nn.Conv2d(growth_rate, growth_rate, 3, 1, 1, bias=False)),
                    ("norm1", nn.BatchNorm2d(growth_rate)), ("relu1", nn.ReLU(inplace=True)),
                    ("conv2", nn.Conv2d(growth_rate, c, 3, 1, 1, bias=False)),
                    ("norm2", nn.BatchNorm2d(c)), ("relu2", nn.ReLU(inplace=True))]
        else:
            stem = [("conv0", nn.Conv2d(in_chans, c, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(c)),
                    ("relu0", nn.ReLU(inplace=True))]
        self.features = FusedSequential(OrderedDict(stem + [("pool0", nn.MaxPool2d(3, 2, 1))]))
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth_rate, bn_size, drop_rate))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.num_features = c
        self.dropout = dropout
        self.classifier = Linear(c, num_classes)

    def forward_features(self, x):
        return F.relu(self.features(to_channels_last_for_inference(self, x)))  # norm5 then ReLU

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.classifier(F.dropout(x, self.dropout, self.training))


def _register(name, aliases):
    growth, blocks, deep = CONFIGS[name]

    def build(weights=None, **kwargs):
        model = DenseNet(growth, blocks, deep_stem=deep, **kwargs)
        return finish(model, weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"DenseNet-{name[8:]} (growth {growth}{', deep stem' if deep else ''}); options num_classes, "
                     "in_chans, drop_rate (per layer, torchvision), dropout (head, timm's drop_rate), bn_size.")
    globals()[name] = register_model(*aliases)(build)


for _name, _aliases in [("densenet121", ("tv_densenet121",)), ("densenet161", ("tv_densenet161",)),
                        ("densenet169", ("tv_densenet169",)), ("densenet201", ("tv_densenet201",)),
                        ("densenet264", ()), ("densenet264d", ())]:
    _register(_name, _aliases)
