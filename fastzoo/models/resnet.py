"""ResNet V1.5 (He et al. 2016; stride on the 3x3 conv), ResNeXt (Xie et al. 2017), Wide ResNet
(Zagoruyko & Komodakis 2016) and SE-ResNet / SE-ResNeXt (Hu et al. 2018): one builder over stage tables.
The layout is torchvision's (conv1/bn1, layer1..4, downsample = Sequential(conv, bn), fc), which is also
timm's ResNet layout; the SE variants add timm's se.fc1 / se.fc2 (SEModule: ReLU, sigmoid gate, channels
/ 16 rounded to 8), so timm seresnet* / seresnext* state_dicts load unchanged.

Eval mode folds every conv/BN pair: the 1x1 convs run pwconv_bn_act (the bottleneck's last one with the
residual add and ReLU fused in, unless SE sits between), the 3x3 / 7x7 / strided convs one conv with the
folded weight and bias, SE runs squeeze_excite.

drop_path_rate (timm's option; torchvision has none): stochastic depth on each block's residual branch in train
mode, block i of n dropping with rate * i / (n - 1) as in timm, one per-sample draw per block in timm's order.
Eval mode is unaffected."""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear, SqueezeExcite
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._drop_path import drop_path, linear_rates
from ._registry import register_model
from ._weights import load_weights


def _se(channels):
    """timm's SEModule: channels / 16 rounded to a multiple of 8 (make_divisible with round_limit 0), sigmoid gate."""
    return SqueezeExcite(channels, max(8, int(channels / 16 + 4) // 8 * 8), "relu", "sigmoid")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, se=False,
                 drop_path_rate=0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = _se(planes) if se else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else conv_bn_act(self, *self.downsample, x, "identity")
        out = conv_bn_act(self, self.conv1, self.bn1, x, "relu")
        drop = self.training and self.drop_path_rate > 0
        if self.se is None and not drop:
            return conv_bn_act(self, self.conv2, self.bn2, out, "relu", identity)
        out = conv_bn_act(self, self.conv2, self.bn2, out, "identity")
        out = out if self.se is None else self.se(out)
        return F.relu(drop_path(out, self.drop_path_rate, self.training) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, se=False,
                 drop_path_rate=0.0):
        super().__init__()
        self.drop_path_rate = drop_path_rate
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.se = _se(planes * self.expansion) if se else None
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else conv_bn_act(self, *self.downsample, x, "identity")
        out = conv_bn_act(self, self.conv1, self.bn1, x, "relu")
        out = conv_bn_act(self, self.conv2, self.bn2, out, "relu")
        drop = self.training and self.drop_path_rate > 0
        if self.se is None and not drop:
            return conv_bn_act(self, self.conv3, self.bn3, out, "relu", identity)
        out = conv_bn_act(self, self.conv3, self.bn3, out, "identity")
        out = out if self.se is None else self.se(out)
        return F.relu(drop_path(out, self.drop_path_rate, self.training) + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}

# blocks per stage (conv2_x .. conv5_x): the paper's table 1
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, in_chans=3, groups=1, width_per_group=64, se=False,
                 dropout=0.0, zero_init_residual=False, drop_path_rate=0.0):
        super().__init__()
        block = BLOCKS[block] if isinstance(block, str) else block
        rates = iter(linear_rates(drop_path_rate, sum(layers)))
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(layers):
            planes, stride = 64 * 2 ** i, 1 if i == 0 else 2
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * block.expansion))
            blocks = []
            for j in range(n):
                blocks.append(block(self.inplanes, planes, stride if j == 0 else 1, downsample if j == 0 else None,
                                    groups, width_per_group, se, next(rates)))
                self.inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = self.inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = dropout
        self.fc = Linear(self.num_features, num_classes)
        self._zero_init_residual = zero_init_residual

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        x = self.maxpool(conv_bn_act(self, self.conv1, self.bn1, x, "relu"))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        x = F.dropout(x, self.dropout, self.training)
        return self.fc(x)


def _zero_init(model):
    if model._zero_init_residual:  # torchvision's option: each block starts as the identity
        for m in model.modules():
            if isinstance(m, (Bottleneck, BasicBlock)):
                nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)


def _resnet(depth, weights=None, groups=1, width_per_group=64, se=False, **kwargs):
    block, layers = DEPTHS[depth]
    model = finish(ResNet(block, layers, groups=groups, width_per_group=width_per_group, se=se, **kwargs))
    _zero_init(model)
    return model if weights is None else load_weights(model, weights)


def _variant(name, depth, groups=1, width_per_group=64, se=False, aliases=()):
    def build(weights=None, **kwargs):
        return _resnet(depth, weights, groups, width_per_group, se, **kwargs)
    build.__name__ = build.__qualname__ = name
    kind = "SE-" if se else ""
    kind += f"ResNeXt-{depth} {groups}x{width_per_group}d" if groups > 1 else (
        f"Wide ResNet-{depth}-{width_per_group // 64}" if width_per_group != 64 else f"ResNet-{depth}")
    build.__doc__ = f"{kind}; options num_classes, in_chans, dropout, zero_init_residual, drop_path_rate, weights."
    globals()[name] = register_model(*aliases)(build)


# name, depth, groups, width per group, SE, aliases (torchvision / timm names)
VARIANTS = [
    ("resnet18", 18, 1, 64, False, ("tv_resnet18",)),
    ("resnet34", 34, 1, 64, False, ("tv_resnet34",)),
    ("resnet50", 50, 1, 64, False, ("tv_resnet50",)),
    ("resnet101", 101, 1, 64, False, ("tv_resnet101",)),
    ("resnet152", 152, 1, 64, False, ("tv_resnet152",)),
    ("resnext50_32x4d", 50, 32, 4, False, ("tv_resnext50_32x4d",)),
    ("resnext101_32x4d", 101, 32, 4, False, ()),
    ("resnext101_32x8d", 101, 32, 8, False, ("tv_resnext101_32x8d",)),
    ("resnext101_64x4d", 101, 64, 4, False, ()),
    ("wide_resnet50_2", 50, 1, 128, False, ("wide_resnet50", "tv_wide_resnet50_2")),
    ("wide_resnet101_2", 101, 1, 128, False, ("wide_resnet101", "tv_wide_resnet101_2")),
    ("seresnet18", 18, 1, 64, True, ("se_resnet18",)),
    ("seresnet34", 34, 1, 64, True, ("se_resnet34",)),
    ("seresnet50", 50, 1, 64, True, ("se_resnet50",)),
    ("seresnet101", 101, 1, 64, True, ("se_resnet101",)),
    ("seresnet152", 152, 1, 64, True, ("se_resnet152",)),
    ("seresnext50_32x4d", 50, 32, 4, True, ("se_resnext50_32x4d",)),
    ("seresnext101_32x4d", 101, 32, 4, True, ("se_resnext101_32x4d",)),
    ("seresnext101_32x8d", 101, 32, 8, True, ()),
]
for _row in VARIANTS:
    _variant(*_row[:5], aliases=_row[5])
