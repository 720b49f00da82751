"""ShuffleNet V1 (Zhang et al. 2017, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices"), groups g = 1, 2, 3, 4, 8 at widths 0.5x, 1.0x, 1.5x, 2.0x.

Architecture, the paper's table 1: conv1 3x3/2 (24 channels) + BN + ReLU, max-pool 3x3/2, stage2..4 of 4 / 8 / 4
ShuffleNet units, global average pool, fc. Output channels of stage2..4 per g at 1x: g=1 144/288/576, g=2
200/400/800, g=3 240/480/960, g=4 272/544/1088, g=8 384/768/1536. A unit (figure 2): 1x1 GConv + BN + ReLU, channel
shuffle, 3x3 depthwise conv + BN (no ReLU), 1x1 GConv + BN, then add the input and ReLU; the first unit of a stage
has stride 2 on the depthwise conv, a 3x3/2 average pool on the shortcut, and concatenates instead of adding (its
main branch gives out - in channels). The bottleneck is a quarter of the stage's output channels; the first 1x1
conv of stage2 is not grouped (its input has only 24 channels).

Widths "ShuffleNet s x" (table 2) scale the stage channels by s, rounded to a multiple of 4 g so that every grouped
conv divides (g=3 and g=8 at 0.5x..2x and every width at 1x need no rounding). conv1 has 24 channels, 12 at 0.5x
(16 for g=8, so that the stage2 concatenation divides by 8) and 48 at 2x: the channel choice of the authors' own
implementation (megvii-model/ShuffleNet-Series), which reproduces the paper's complexities (MFLOPs = multiply-adds
of the convs and the fc at 224x224: table 1 143 / 140 / 137 / 133 / 137 for g = 1 / 2 / 3 / 4 / 8; 38 for 0.5x g=3,
292 for 1.5x g=3, 524 for 2x g=3). The paper gives no parameter counts; the authors' implementation reports 1.9M
for 1.0x g=3 (its fc has no bias). tests/test_zoo_shufflenetv1.py checks the MFLOPs and the layer table.

The layout is fastzoo's own (conv1, stage2..4 of units with conv1 / dwconv / conv2 ConvBnAct, fc): the authors'
checkpoints shuffle after the depthwise conv with the inverse permutation and have a bias-free fc, so they do
not load as they are.

Eval mode: conv1 (3x3/2) runs as one conv with BN folded; each unit's ungrouped 1x1 convs (all of g=1, the first
of stage2) run pwconv_bn_act (the second with the residual add and ReLU fused), the grouped 1x1 convs one grouped
conv with BN folded (pwconv_bn_act takes no groups), the shuffle channel_shuffle, the depthwise conv + BN
dwconv_bn_act (act identity)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ChannelShuffle, ConvBnAct, Linear
from ._common import finish, make_divisible, to_channels_last_for_inference
from ._registry import register_model

REPEATS = (4, 8, 4)  # units in stage2..4 (table 1)
CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
            8: (384, 768, 1536)}  # output channels of stage2..4 at 1x (table 1)
WIDTHS = {"x0_5": 0.5, "x1_0": 1.0, "x1_5": 1.5, "x2_0": 2.0}


def stem_channels(groups, width):
    """conv1's channels: 24 (table 1), 12 at 0.5x (16 for g=8) and 48 at 2x as in the authors' implementation."""
    if width <= 0.5:
        return 16 if groups == 8 else 12
    return 48 if width >= 2.0 else 24


def stage_channels(groups, width):
    """Output channels of stage2..4: table 1 times the width, rounded to a multiple of 4 * groups."""
    return tuple(make_divisible(c * width, 4 * groups) for c in CHANNELS[groups])


class ShuffleUnit(nn.Module):
    """Figure 2 (b) (stride 1: add) and (c) (stride 2: 3x3/2 average-pooled shortcut, concat)."""

    def __init__(self, in_chs, out_chs, stride, groups, first_groups=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleNetV1 unit: stride must be 1 or 2, got {stride}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError("ShuffleNetV1 unit: a stride-1 unit needs in_chs == out_chs")
        mid = out_chs // 4
        branch = out_chs - in_chs if stride == 2 else out_chs
        g1 = groups if first_groups is None else first_groups
        for c, g, what in ((in_chs, g1, "input"), (mid, g1, "bottleneck"), (mid, groups, "bottleneck"),
                           (branch, groups, "output")):
            if c % g:
                raise ValueError(f"ShuffleNetV1 unit: {what} channels {c} do not divide into {g} groups")
        self.stride, self.groups = stride, groups
        self.conv1 = ConvBnAct(in_chs, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dwconv = ConvBnAct(mid, mid, 3, stride, groups=mid, act="identity")
        self.conv2 = ConvBnAct(mid, branch, 1, groups=groups)  # + BN, (+ input), ReLU

    def forward(self, x):
        y = self.dwconv(self.shuffle(self.conv1(x)))
        if self.stride == 1:
            return self.conv2(y, residual=x)
        # the shortcut is non-negative (a ReLU or max-pool output), so ReLU(concat) == concat(shortcut, ReLU(main))
        return torch.cat((F.avg_pool2d(x, 3, 2, 1), self.conv2(y)), 1)


class ShuffleNetV1(nn.Module):
    def __init__(self, groups=3, width_mult=1.0, repeats=REPEATS, num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        if groups not in CHANNELS:
            raise ValueError(f"ShuffleNetV1: groups must be one of {sorted(CHANNELS)}, got {groups}")
        self.groups, self.width_mult = groups, width_mult
        c = stem_channels(groups, width_mult)
        self.conv1 = ConvBnAct(in_chans, c, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, out) in enumerate(zip(repeats, stage_channels(groups, width_mult))):
            units = [ShuffleUnit(c if j == 0 else out, out, 2 if j == 0 else 1, groups,
                                 first_groups=1 if (i == 0 and j == 0) else None) for j in range(n)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            c = out
        self.num_features = c
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = Linear(c, num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.conv1(to_channels_last_for_inference(self, x)))
        return self.stage4(self.stage3(self.stage2(x)))

    def forward(self, x):
        return self.fc(self.dropout(self.forward_features(x).mean([2, 3])))


def _register(groups, width):
    name = f"shufflenetv1_g{groups}_{width}"

    def build(weights=None, **kwargs):
        return finish(ShuffleNetV1(groups, WIDTHS[width], **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ShuffleNet V1 {width[1:].replace('_', '.')}x, g={groups}; options num_classes, in_chans, "
                     "dropout, weights.")
    aliases = ("shufflenetv1", "shufflenet_v1") if (groups, width) == (3, "x1_0") else ()
    globals()[name] = register_model(*aliases)(build)


for _g in CHANNELS:
    for _w in WIDTHS:
        _register(_g, _w)
