"""EfficientNetV2 S, M, L (Tan & Le 2021) with torchvision's module layout (efficientnet_v2_s/m/l): torchvision
state_dicts load unchanged, timm's (efficientnetv2_s/m/l, the non-TF definitions) through the order-and-shape
remap. Built by efficientnet.build: Fused-MBConv stages run the fused_mbconv op in eval mode, MBConv stages
(with SE) the mbconv op."""
from ._registry import register_model
from .efficientnet import build

# (block, expand ratio, kernel, first stride, in channels, out channels, repeats): the paper's table 4 (S) and
# the M / L configurations of its reference code, as torchvision lists them.
V2_S = [("fused", 1, 3, 1, 24, 24, 2), ("fused", 4, 3, 2, 24, 48, 4), ("fused", 4, 3, 2, 48, 64, 4),
        ("mb", 4, 3, 2, 64, 128, 6), ("mb", 6, 3, 1, 128, 160, 9), ("mb", 6, 3, 2, 160, 256, 15)]
V2_M = [("fused", 1, 3, 1, 24, 24, 3), ("fused", 4, 3, 2, 24, 48, 5), ("fused", 4, 3, 2, 48, 80, 5),
        ("mb", 4, 3, 2, 80, 160, 7), ("mb", 6, 3, 1, 160, 176, 14), ("mb", 6, 3, 2, 176, 304, 18),
        ("mb", 6, 3, 1, 304, 512, 5)]
V2_L = [("fused", 1, 3, 1, 32, 32, 4), ("fused", 4, 3, 2, 32, 64, 7), ("fused", 4, 3, 2, 64, 96, 7),
        ("mb", 4, 3, 2, 96, 192, 10), ("mb", 6, 3, 1, 192, 224, 19), ("mb", 6, 3, 2, 224, 384, 25),
        ("mb", 6, 3, 1, 384, 640, 7)]


def _efficientnetv2(rows, dropout, weights=None, **kwargs):
    kwargs.setdefault("dropout", dropout)
    kwargs.setdefault("bn_eps", 1e-3)
    return build(rows, weights, last_channel=1280, **kwargs)


@register_model("efficientnet_v2_s", "efficientnetv2_s")
def efficientnetv2_s(weights=None, **kwargs):
    """EfficientNetV2-S (384px)."""
    return _efficientnetv2(V2_S, 0.2, weights, **kwargs)


@register_model("efficientnet_v2_m", "efficientnetv2_m")
def efficientnetv2_m(weights=None, **kwargs):
    """EfficientNetV2-M (480px)."""
    return _efficientnetv2(V2_M, 0.3, weights, **kwargs)


@register_model("efficientnet_v2_l", "efficientnetv2_l")
def efficientnetv2_l(weights=None, **kwargs):
    """EfficientNetV2-L (480px)."""
    return _efficientnetv2(V2_L, 0.4, weights, **kwargs)
