"""EfficientNet B0-B7 (Tan & Le 2019) with torchvision's module layout: torchvision state_dicts load unchanged,
timm's (efficientnet_b*) through an order-and-shape remap. The builder here also makes EfficientNetV2
(efficientnetv2.py), as torchvision's EfficientNet class does.

Eval mode runs every MBConv block as one fused mbconv op (expand pw, dw, SE, project pw, residual), every
Fused-MBConv block as one fused_mbconv op, the 1x1 head as pwconv_bn_act and the 3x3 stem as one conv with BN
folded. Train mode applies stochastic depth (drop_path_rate, linearly increasing over the blocks, as torchvision
does)."""
import math

from torch import nn

from ..layers import BlockSequence, ConvBnAct, FusedMBConv, Linear, MBConv
from ._common import FeaturesClassifier, finish, make_divisible, set_bn
from ._registry import register_model
from ._weights import load_weights, remap_by_order

# (block, expand ratio, kernel, first stride, in channels, out channels, repeats): the paper's table 1 (B0).
B0 = [("mb", 1, 3, 1, 32, 16, 1), ("mb", 6, 3, 2, 16, 24, 2), ("mb", 6, 5, 2, 24, 40, 2),
      ("mb", 6, 3, 2, 40, 80, 3), ("mb", 6, 5, 1, 80, 112, 3), ("mb", 6, 5, 2, 112, 192, 4),
      ("mb", 6, 3, 1, 192, 320, 1)]

# variant: (width multiplier, depth multiplier, dropout, BN eps, BN momentum) as torchvision builds them.
SCALING = {
    "b0": (1.0, 1.0, 0.2, 1e-5, 0.1), "b1": (1.0, 1.1, 0.2, 1e-5, 0.1), "b2": (1.1, 1.2, 0.3, 1e-5, 0.1),
    "b3": (1.2, 1.4, 0.3, 1e-5, 0.1), "b4": (1.4, 1.8, 0.4, 1e-5, 0.1), "b5": (1.6, 2.2, 0.4, 1e-3, 0.01),
    "b6": (1.8, 2.6, 0.5, 1e-3, 0.01), "b7": (2.0, 3.1, 0.5, 1e-3, 0.01),
}


class EfficientNet(FeaturesClassifier):
    """rows: (block "mb" | "fused", expand ratio, kernel, stride, in, out, repeats); last_channel None means
    4x the last stage's channels (V1)."""

    def __init__(self, rows, num_classes=1000, in_chans=3, width_mult=1.0, depth_mult=1.0, dropout=0.2,
                 drop_path_rate=0.2, last_channel=None, bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        stages = [(blk, t, k, s, ch(cin), ch(cout), int(math.ceil(n * depth_mult)))
                  for blk, t, k, s, cin, cout, n in rows]
        layers = [ConvBnAct(in_chans, stages[0][4], 3, 2, act="silu", **bn)]
        total, i = sum(st[6] for st in stages), 0
        for blk, t, k, s, cin, cout, n in stages:
            stage = []
            for j in range(n):
                cin, stride, p = (cin if j == 0 else cout), (s if j == 0 else 1), drop_path_rate * i / total
                exp = make_divisible(cin * t, 8)
                if blk == "fused":
                    stage.append(FusedMBConv(cin, cout, k, stride, exp, "silu", p, **bn))
                else:
                    stage.append(MBConv(cin, cout, k, stride, exp, max(1, cin // 4), "silu", "silu", "sigmoid", p,
                                        **bn))
                i += 1
            layers.append(nn.Sequential(*stage))
        last_in = stages[-1][5]
        last = last_channel if last_channel is not None else 4 * last_in
        layers.append(ConvBnAct(last_in, last, 1, act="silu", **bn))
        self.features = BlockSequence(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), Linear(last, num_classes))


def init_efficientnet(model):
    """torchvision's EfficientNet initialisation: the classifier is uniform(+-1/sqrt(out)), not normal."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            r = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)
    return model


def timm_remap(sd, model):
    """timm's layout (conv_stem, bn1, blocks.* conv_pw/conv_dw/se.conv_reduce/se.conv_expand/conv_pwl (or conv_exp
    for edge residuals), conv_head, bn2, classifier) pairs with torchvision's in order and shape; timm's non-TF
    EfficientNets use BN eps 1e-5."""
    out = remap_by_order(sd, model)
    if out is not None:
        set_bn(model, eps=1e-5)
    return out


def build(rows, weights=None, **kwargs):
    """The one builder of EfficientNet V1 and V2: initialise as torchvision does, then load weights if given."""
    model = init_efficientnet(finish(EfficientNet(rows, **kwargs)))
    if weights is not None:
        load_weights(model, weights, remaps=(timm_remap,))
    return model


def _efficientnet(variant, weights=None, **kwargs):
    width, depth, dropout, eps, momentum = SCALING[variant]
    for k, v in dict(width_mult=width, depth_mult=depth, dropout=dropout, bn_eps=eps, bn_momentum=momentum).items():
        kwargs.setdefault(k, v)
    return build(B0, weights, **kwargs)


@register_model("efficientnet_b0")
def efficientnet_b0(weights=None, **kwargs):
    """EfficientNet-B0 (width 1.0, depth 1.0, 224px)."""
    return _efficientnet("b0", weights, **kwargs)


@register_model("efficientnet_b1")
def efficientnet_b1(weights=None, **kwargs):
    """EfficientNet-B1 (width 1.0, depth 1.1, 240px)."""
    return _efficientnet("b1", weights, **kwargs)


@register_model("efficientnet_b2")
def efficientnet_b2(weights=None, **kwargs):
    """EfficientNet-B2 (width 1.1, depth 1.2, 260px)."""
    return _efficientnet("b2", weights, **kwargs)


@register_model("efficientnet_b3")
def efficientnet_b3(weights=None, **kwargs):
    """EfficientNet-B3 (width 1.2, depth 1.4, 300px)."""
    return _efficientnet("b3", weights, **kwargs)


@register_model("efficientnet_b4")
def efficientnet_b4(weights=None, **kwargs):
    """EfficientNet-B4 (width 1.4, depth 1.8, 380px)."""
    return _efficientnet("b4", weights, **kwargs)


@register_model("efficientnet_b5")
def efficientnet_b5(weights=None, **kwargs):
    """EfficientNet-B5 (width 1.6, depth 2.2, 456px)."""
    return _efficientnet("b5", weights, **kwargs)


@register_model("efficientnet_b6")
def efficientnet_b6(weights=None, **kwargs):
    """EfficientNet-B6 (width 1.8, depth 2.6, 528px)."""
    return _efficientnet("b6", weights, **kwargs)


@register_model("efficientnet_b7")
def efficientnet_b7(weights=None, **kwargs):
    """EfficientNet-B7 (width 2.0, depth 3.1, 600px)."""
    return _efficientnet("b7", weights, **kwargs)
