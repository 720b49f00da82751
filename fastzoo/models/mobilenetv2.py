"""MobileNetV2 (Sandler et al. 2018) with torchvision's module layout: torchvision state_dicts load unchanged,
timm's (mobilenetv2_*) through an order-and-shape remap. Eval mode runs each inverted residual as one fused
mbconv op, the 1x1 head as pwconv_bn_act and the 3x3 stem as one conv with BN folded."""
from torch import nn

from ..layers import BlockSequence, ConvBnAct, Linear, MBConv
from ._common import FeaturesClassifier, finish, make_divisible
from ._registry import register_model
from ._weights import remap_by_order

# (expansion t, out channels c, repeats n, first stride s): the paper's table 2.
MOBILENETV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


class MobileNetV2(FeaturesClassifier):
    def __init__(self, rows=MOBILENETV2, num_classes=1000, in_chans=3, width_mult=1.0, dropout=0.2,
                 drop_path_rate=0.0, stem_channels=32, last_channel=1280, round_nearest=8, act="relu6"):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, round_nearest)  # noqa: E731
        cin = ch(stem_channels)
        self.last_channel = make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        layers = [ConvBnAct(in_chans, cin, 3, 2, act=act)]
        total, i = sum(r[2] for r in rows), 0
        for t, c, n, s in rows:
            cout = ch(c)
            for j in range(n):
                layers.append(MBConv(cin, cout, 3, s if j == 0 else 1, int(round(cin * t)), None, act,
                                     drop_path_rate=drop_path_rate * i / total, layout="conv"))
                cin, i = cout, i + 1
        layers.append(ConvBnAct(cin, self.last_channel, 1, act=act))
        self.features = BlockSequence(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), Linear(self.last_channel, num_classes))


def _timm_remap(sd, model):
    """timm's layout (conv_stem, bn1, blocks.*.conv_pw/conv_dw/conv_pwl, conv_head, bn2, classifier) pairs with
    torchvision's in order and shape."""
    return remap_by_order(sd, model)


@register_model("mobilenet_v2", "mobilenetv2_100", "tv_mobilenet_v2")
def mobilenetv2(weights=None, **kwargs):
    """MobileNetV2; width_mult (alpha) scales the channels (the head keeps 1280 for alpha <= 1)."""
    return finish(MobileNetV2(**kwargs), weights, remaps=(_timm_remap,))
