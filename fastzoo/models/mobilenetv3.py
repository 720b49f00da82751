"""MobileNetV3 small / large (Howard et al. 2019) with torchvision's module layout: torchvision
state_dicts load unchanged, timm's (mobilenetv3_*_100) through an order-and-shape remap."""
from torch import nn

from ..layers import BlockSequence, ConvBnAct, Linear, MBConv
from ._common import FeaturesClassifier, finish, make_divisible, set_bn
from ._registry import register_model
from ._weights import remap_by_order

# (in, kernel, expanded, out, squeeze-excite, activation, stride): the paper's tables 1 and 2.
SMALL = [
    (16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2), (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2), (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1), (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1), (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1), (96, 5, 576, 96, True, "hardswish", 1),
]
LARGE = [
    (16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2), (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2), (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
]


class MobileNetV3(FeaturesClassifier):
    def __init__(self, rows, last_channel, num_classes=1000, in_chans=3, width_mult=1.0, dropout=0.2,
                 drop_path_rate=0.0, bn_eps=0.001, bn_momentum=0.01):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers = [ConvBnAct(in_chans, ch(rows[0][0]), 3, 2, act="hardswish", **bn)]
        for i, (cin, k, exp, cout, se, act, stride) in enumerate(rows):
            se_chs = make_divisible(ch(exp) // 4, 8) if se else None
            layers.append(MBConv(ch(cin), ch(cout), k, stride, ch(exp), se_chs, act, "relu", "hardsigmoid",
                                 drop_path_rate * i / len(rows), **bn))
        last_in = ch(rows[-1][3])
        layers.append(ConvBnAct(last_in, 6 * last_in, 1, act="hardswish", **bn))
        self.features = BlockSequence(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(Linear(6 * last_in, ch(last_channel)), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), Linear(ch(last_channel), num_classes))


def _timm_remap(sd, model):
    """timm's layout (conv_stem, blocks.*, conv_head) pairs with torchvision's in order; timm uses BN eps 1e-5."""
    out = remap_by_order(sd, model)
    if out is not None:
        set_bn(model, eps=1e-5)
    return out


def _mobilenetv3(rows, last_channel, weights=None, **kwargs):
    return finish(MobileNetV3(rows, last_channel, **kwargs), weights, remaps=(_timm_remap,))


@register_model("mobilenet_v3_small", "mobilenetv3_small_100", "tv_mobilenet_v3_small")
def mobilenetv3_small(weights=None, **kwargs):
    """MobileNetV3-Small; width_mult (alpha) scales the channels."""
    return _mobilenetv3(SMALL, 1024, weights, **kwargs)


@register_model("mobilenet_v3_large", "mobilenetv3_large_100", "tv_mobilenet_v3_large")
def mobilenetv3_large(weights=None, **kwargs):
    """MobileNetV3-Large; width_mult (alpha) scales the channels."""
    return _mobilenetv3(LARGE, 1280, weights, **kwargs)

