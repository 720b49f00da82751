"""MobileNetV1 (Howard et al. 2017): a 3x3 stem and 13 depthwise-separable blocks (dw ConvBnAct + pw ConvBnAct).
Neither torchvision nor timm's EfficientNet-style layout is a plain Sequential of ConvBnAct, so the fastzoo layout
is its own (features.0 stem, features.i = [dw, pw]); timm's state_dicts (mobilenetv1_100, mobilenetv1_125) load
through an order-and-shape remap. Eval mode runs every dw as dwconv_bn_act, every pw as pwconv_bn_act and the
stem as one conv with BN folded. The activation defaults to ReLU6 as in timm's checkpoints (the paper uses ReLU:
act="relu")."""
from torch import nn

from ..layers import ConvBnAct, Linear
from ._common import FeaturesClassifier, finish, make_divisible
from ._registry import register_model
from ._weights import remap_by_order

# (out channels, stride) of the 13 depthwise-separable blocks: the paper's table 1.
MOBILENETV1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
               (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(FeaturesClassifier):
    def __init__(self, rows=MOBILENETV1, num_classes=1000, in_chans=3, width_mult=1.0, dropout=0.0,
                 stem_channels=32, act="relu6", bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        cin = ch(stem_channels)
        layers = [ConvBnAct(in_chans, cin, 3, 2, act=act, **bn)]
        for c, s in rows:
            cout = ch(c)
            layers.append(nn.Sequential(ConvBnAct(cin, cin, 3, s, groups=cin, act=act, **bn),
                                        ConvBnAct(cin, cout, 1, act=act, **bn)))
            cin = cout
        self.num_features = cin
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), Linear(cin, num_classes))


def _timm_remap(sd, model):
    """timm's layout (conv_stem, bn1, blocks.i.j.conv_dw/bn1/conv_pw/bn2, classifier) pairs with fastzoo's in
    order and shape."""
    return remap_by_order(sd, model)


@register_model("mobilenetv1_100")
def mobilenetv1(weights=None, **kwargs):
    """MobileNetV1; width_mult (alpha) scales the channels (timm's mobilenetv1_125 is width_mult=1.25)."""
    return finish(MobileNetV1(**kwargs), weights, remaps=(_timm_remap,))
