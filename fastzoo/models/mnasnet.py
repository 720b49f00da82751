"""MnasNet-B1 (Tan et al. 2019) at depth multipliers 0.5, 0.75, 1.0, 1.3 with torchvision's module layout
(one flat `layers` Sequential: stem conv/BN/ReLU, separable dw/pw, six stacks of inverted residuals, head
conv/BN/ReLU), so torchvision state_dicts load unchanged; timm's (mnasnet_100) through an order-and-shape remap.

Eval mode runs the inverted residuals as fused mbconv ops and the flat conv/BN(/act) runs of the stem and head
as dwconv_bn_act / pwconv_bn_act (the 3x3 stem as one conv with BN folded)."""
from torch import nn

from .. import activations
from ..layers import Linear, MBConv
from ._common import finish, make_divisible, to_channels_last_for_inference
from ._conv_bn import _caches, conv_bn_act
from ._registry import register_model
from ._weights import remap_by_order

BN_MOMENTUM = 1 - 0.9997  # the paper's TensorFlow momentum 0.9997

# (out channels, kernel, first stride, expansion, repeats) of the six stacks: the paper's figure 7 (B1).
STACKS = [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2), (192, 5, 2, 6, 4),
          (320, 3, 1, 6, 1)]
STEM, SEPARABLE, HEAD = 32, 16, 1280


def _depth(c, alpha):
    """torchvision's _round_to_multiple_of(c * alpha, 8) (round up unless within 10%)."""
    return make_divisible(c * alpha, 8)


class FlatConvBnAct(nn.Sequential):
    """A Sequential holding conv, BN and activation modules flat (torchvision keys layers.0, layers.1, ...).
    Eval mode runs every Conv2d-BatchNorm2d(-activation) run as one fused op with BN folded (_conv_bn.conv_bn_act);
    other children (the inverted-residual stacks) run as they are. Train mode runs the plain chain."""

    def train(self, mode: bool = True):
        _caches(self).clear()  # BN running statistics change in place in train mode
        return super().train(mode)

    def forward(self, x):
        if self.training:
            _caches(self).clear()
            return super().forward(x)
        i = 0
        while i < len(self):
            m = self[i]
            if isinstance(m, nn.Conv2d) and i + 1 < len(self) and isinstance(self[i + 1], nn.BatchNorm2d):
                nxt = self[i + 2] if i + 2 < len(self) else None
                has_act = type(nxt) in activations._MODULES
                x = conv_bn_act(self, m, self[i + 1], x, activations.name_of(nxt) if has_act else "identity")
                i += 3 if has_act else 2
            else:
                x, i = m(x), i + 1
        return x


def _conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
    mods = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    return mods + ([nn.ReLU(inplace=True)] if relu else [])


class MNASNet(nn.Module):
    def __init__(self, alpha=1.0, num_classes=1000, in_chans=3, dropout=0.2, drop_path_rate=0.0, stacks=STACKS):
        super().__init__()
        if alpha <= 0.0:
            raise ValueError(f"MNASNet: alpha should be greater than 0.0 instead of {alpha}")
        self.alpha = alpha
        stem, sep = _depth(STEM, alpha), _depth(SEPARABLE, alpha)
        layers = _conv_bn(in_chans, stem, 3, 2) + _conv_bn(stem, stem, 3, groups=stem) + _conv_bn(stem, sep, 1,
                                                                                                   relu=False)
        cin, total, i = sep, sum(s[4] for s in stacks), 0
        for c, k, s, t, n in stacks:
            cout, blocks = _depth(c, alpha), []
            for j in range(n):
                blocks.append(MBConv(cin, cout, k, s if j == 0 else 1, cin * t, None, "relu",
                                     drop_path_rate=drop_path_rate * i / total, bn_momentum=BN_MOMENTUM,
                                     layout="layers"))
                cin, i = cout, i + 1
            layers.append(nn.Sequential(*blocks))
        layers += _conv_bn(cin, HEAD, 1)
        self.layers = FlatConvBnAct(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), Linear(HEAD, num_classes))

    def forward_features(self, x):
        return self.layers(to_channels_last_for_inference(self, x))

    def forward(self, x):
        return self.classifier(self.forward_features(x).mean([2, 3]))


def _timm_remap(sd, model):
    """timm's layout (conv_stem, bn1, blocks.0 conv_dw/conv_pw, blocks.* conv_pw/conv_dw/conv_pwl, conv_head, bn2,
    classifier) pairs with torchvision's in order and shape."""
    return remap_by_order(sd, model)


def _mnasnet(alpha, weights=None, **kwargs):
    return finish(MNASNet(alpha, **kwargs), weights, remaps=(_timm_remap,))


@register_model("mnasnet0_5", "mnasnet_050")
def mnasnet0_5(weights=None, **kwargs):
    """MnasNet-B1 at depth multiplier 0.5."""
    return _mnasnet(0.5, weights, **kwargs)


@register_model("mnasnet0_75", "mnasnet_075")
def mnasnet0_75(weights=None, **kwargs):
    """MnasNet-B1 at depth multiplier 0.75."""
    return _mnasnet(0.75, weights, **kwargs)


@register_model("mnasnet1_0", "mnasnet_100", "mnasnet_b1")
def mnasnet1_0(weights=None, **kwargs):
    """MnasNet-B1 at depth multiplier 1.0."""
    return _mnasnet(1.0, weights, **kwargs)


@register_model("mnasnet1_3", "mnasnet_130")
def mnasnet1_3(weights=None, **kwargs):
    """MnasNet-B1 at depth multiplier 1.3."""
    return _mnasnet(1.3, weights, **kwargs)
