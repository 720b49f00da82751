"""ConvMixer (Trockman & Kolter 2022, "Patches Are All You Need?"): a patch-embedding conv and `depth` blocks
of [residual(depthwise KxK conv -> act -> BN), pointwise conv -> act -> BN]. The layout is timm's (stem.0/1/2,
blocks.i.0.fn.0/1/2, blocks.i.1/2/3, head), so timm convmixer_* state_dicts load unchanged.

Every conv has a bias and BN comes AFTER the activation, so BN cannot be folded into the conv in front of it
(the activation sits between) nor into the conv behind it (zero padding of the depthwise conv and the residual
add see the un-normalized tensor). Eval mode therefore runs each conv's bias + activation inside the fused op
(dwconv_bn_act / pwconv_bn_act with scale 1, shift = bias) and each BN as one folded per-channel multiply-add
(FusedSequential); the patch-embedding conv (stride = kernel) runs as one conv with its bias."""
from torch import nn

from ..layers import Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import FusedSequential
from ._registry import register_model


def _act(act):
    return {"gelu": nn.GELU, "relu": nn.ReLU}[act]()


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class ConvMixer(nn.Module):
    def __init__(self, dim, depth, kernel_size=9, patch_size=7, num_classes=1000, in_chans=3, dropout=0.0,
                 act="gelu"):
        super().__init__()
        self.num_features = dim
        self.stem = FusedSequential(nn.Conv2d(in_chans, dim, patch_size, patch_size), _act(act), nn.BatchNorm2d(dim))
        self.blocks = nn.Sequential(*[FusedSequential(
            Residual(FusedSequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2),
                                     _act(act), nn.BatchNorm2d(dim))),
            nn.Conv2d(dim, dim, 1), _act(act), nn.BatchNorm2d(dim)) for _ in range(depth)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)
        self.head = Linear(dim, num_classes)

    def forward_features(self, x):
        return self.blocks(self.stem(to_channels_last_for_inference(self, x)))

    def forward(self, x):
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.head(self.head_drop(x))


# canonical name, dim, depth, kernel size, patch size, activation, timm name
VARIANTS = [
    ("convmixer_768_32", 768, 32, 7, 7, "relu", ()),
    ("convmixer_1024_20", 1024, 20, 9, 14, "gelu", ("convmixer_1024_20_ks9_p14",)),
    ("convmixer_1536_20", 1536, 20, 9, 7, "gelu", ()),
]


def _variant(name, dim, depth, kernel_size, patch_size, act, aliases):
    def build(weights=None, **kwargs):
        kwargs.setdefault("act", act)
        return finish(ConvMixer(dim, depth, kernel_size, patch_size, **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ConvMixer-{dim}/{depth} (kernel {kernel_size}, patch {patch_size}, {act}); options "
                     "num_classes, in_chans, dropout, act, weights.")
    globals()[name] = register_model(*aliases)(build)


for _row in VARIANTS:
    _variant(*_row)
