"""ConvNeXt tiny / small / base / large (Liu et al. 2022) with torchvision's layout (features.0 stem = conv 4x4/4 +
LayerNorm2d, features.<odd> stages of CNBlock: layer_scale, block.0 dw 7x7 conv, block.2 LayerNorm, block.3 /
block.5 Linear; features.<even> downsample = LayerNorm2d + conv 2x2/2; classifier = LayerNorm2d, Flatten,
Linear), so torchvision state_dicts load unchanged; timm's (stem, stages.<i>.blocks.<j>.conv_dw / norm /
mlp.fc1 / mlp.fc2 / gamma, head.norm / head.fc) through a key remap.

Eval mode: the 7x7 depthwise conv (bias, no BN) runs dwconv_bn_act with unit scale and the bias as shift;
LayerNorm, the MLP (Linear + GELU + Linear) and the 4x4 / 2x2 patch convs are plain PyTorch, run channels_last
so the MLP reads the block's NHWC tensor without copies."""
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear, drop_path
from ._common import to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._registry import register_model
from ._weights import load_weights

# (channels, blocks) per stage, stochastic-depth rate (the paper's section 3 / torchvision)
CONFIGS = {
    "tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
    "large": ((192, 384, 768, 1536), (3, 3, 27, 3), 0.5),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale=1e-6, drop_path_rate=0.0):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        b = self.block
        y = conv_bn_act(self, b[0], None, x, "identity").permute(0, 2, 3, 1)  # NHWC
        y = b[5](b[4](b[3](b[2](y)))) * self.layer_scale.view(-1)
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_path_rate, self.training)


class ConvNeXt(nn.Module):
    def __init__(self, dims, depths, num_classes=1000, in_chans=3, drop_path_rate=0.0, layer_scale=1e-6,
                 dropout=0.0):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        layers, total, k = [stem], sum(depths), 0
        for i, (dim, n) in enumerate(zip(dims, depths)):
            blocks = []
            for _ in range(n):
                blocks.append(CNBlock(dim, layer_scale, drop_path_rate * k / (total - 1.0)))
                k += 1
            layers.append(nn.Sequential(*blocks))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.num_features = dims[-1]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = dropout
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        Linear(dims[-1], num_classes))

    def forward_features(self, x):
        return self.features(to_channels_last_for_inference(self, x))

    def forward(self, x):
        x = self.classifier[1](self.classifier[0](self.avgpool(self.forward_features(x))))
        return self.classifier[2](F.dropout(x, self.dropout, self.training))


def _init(model):
    """torchvision's ConvNeXt initialisation: truncated normal (std 0.02) convs and linears, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


_TIMM_KEYS = [
    (r"^stem\.(\d)\.", r"features.0.\1."),
    (r"^stages\.(\d)\.downsample\.(\d)\.", lambda m: f"features.{2 * int(m[1])}.{m[2]}."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.block.0."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.norm\.", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.block.2."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.block.3."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.block.5."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.gamma$", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.layer_scale"),
    (r"^head\.norm\.", "classifier.0."),
    (r"^head\.fc\.", "classifier.2."),
]


def _timm_remap(sd, model):
    """timm's convnext_* layout -> torchvision's (gamma (C,) becomes layer_scale (C, 1, 1))."""
    if not any(k.startswith("stages.") for k in sd):
        return None
    out = OrderedDict()
    for k, v in sd.items():
        for pat, rep in _TIMM_KEYS:
            k2 = re.sub(pat, rep, k)
            if k2 != k:
                k = k2
                break
        out[k] = v.view(-1, 1, 1) if k.endswith("layer_scale") else v
    return out


def _register(size):
    dims, depths, sd_rate = CONFIGS[size]
    name = f"convnext_{size}"

    def build(weights=None, **kwargs):
        kwargs.setdefault("drop_path_rate", sd_rate)
        model = _init(ConvNeXt(dims, depths, **kwargs))
        return model if weights is None else load_weights(model, weights, remaps=(_timm_remap,))
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ConvNeXt-{size[0].upper()}; options num_classes, in_chans, drop_path_rate (default {sd_rate}), "
                     "layer_scale, dropout (head).")
    globals()[name] = register_model(f"tv_{name}")(build)


for _size in CONFIGS:
    _register(_size)
