"""Residual Attention Network, Attention-56 and Attention-92 (Wang et al. 2017, "Residual Attention Network for
Image Classification"), for 224x224 ImageNet input (any size >= 32 runs: the mask branch upsamples to the sizes it
pooled from).

Architecture, the paper's table 2: conv 7x7/2 64 + BN + ReLU, max-pool 3x3/2; stage1 (56x56): a residual unit
64 -> 256 and 1 attention module; stage2 (28x28): a residual unit 256 -> 512 /2 and 1 (Attention-56) or 2
(Attention-92) modules; stage3 (14x14): a residual unit 512 -> 1024 /2 and 1 or 3 modules; stage4 (7x7): 3 residual
units 1024 -> 2048 /2; BN + ReLU, global average pool, fc. Residual units are pre-activation bottlenecks (BN-ReLU-1x1,
BN-ReLU-3x3, BN-ReLU-1x1, bottleneck = out / 4, the stride on the 3x3 conv, a 1x1 projection of the pre-activated
input where the shape changes): fastzoo.models.resnetv2.PreActBottleneck.

An attention module (section 3, hyper-parameters p = 1, t = 2, r = 1): p pre-processing units; a trunk branch of t
units; a soft-mask branch that max-pools (3x3/2) down to 7x7 at 224 input (3 / 2 / 1 times in stages 1 / 2 / 3)
with r units after each pool (2r at the bottom) and a skip connection (a residual unit) from each level but the
lowest, then goes back up by bilinear interpolation (align_corners, as Caffe's Interp layer), adding the skip
connection and running r units at each level, and ends in BN-ReLU-1x1 conv-BN-ReLU-1x1 conv-sigmoid; the output is
(1 + mask) * trunk (attention residual learning), followed by p units.

Oracle: the paper's table 2 gives 31.9M parameters / 6.2 GFLOPs (Attention-56) and 51.3M / 10.4 GFLOPs
(Attention-92) at 224x224 with 1000 classes (FLOPs as multiply-adds). The architecture above determines 31,810,728
and 52,466,344 parameters and 6.27 / 10.53 G multiply-adds (convs and fc): -0.3% / +2.3% parameters and +1.1% /
+1.3% FLOPs from the paper. (tengshaofeng/ResidualAttentionNetwork-pytorch has the same unit counts but
allocates an unused projection conv in every unit and adds extra sums in the mask branch.) The paper publishes
the module internals only as the text and figures summarised above, so the tests hold the counts to those
tolerances (0.5% and 2.5% parameters, 1.5% FLOPs) and check the layer table by hand.

Eval mode: every unit runs as resnetv2's pre-activation block (its BN-ReLU on the input as one folded multiply-add,
1x1 convs as pwconv_bn_act with the next BN folded in, the 3x3 conv with BN folded, the residual add fused into the
last 1x1); the stem conv + BN + ReLU folded; the mask head's 1x1 convs as pwconv_bn_act (BN + ReLU, then sigmoid)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBnAct, Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import bn_act, conv_bn_act
from ._registry import register_model
from .resnetv2 import PreActBottleneck

Unit = PreActBottleneck
# attention modules per stage (stage1..3): table 2
MODULES = {56: (1, 1, 1), 92: (1, 2, 3)}
STAGE_CHANNELS = (256, 512, 1024, 2048)
DOWNSAMPLINGS = (3, 2, 1)  # mask-branch max-pools in stage1..3 (56 -> 7, 28 -> 7, 14 -> 7 at 224 input)


class MaskHead(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-1x1 conv-sigmoid."""

    def __init__(self, chs):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(chs)
        self.conv1 = nn.Conv2d(chs, chs, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(chs)
        self.conv2 = nn.Conv2d(chs, chs, 1, bias=False)

    def forward(self, x):
        x = conv_bn_act(self, self.conv1, self.norm2, bn_act(self, self.norm1, x, "relu"), "relu")
        return conv_bn_act(self, self.conv2, None, x, "sigmoid")


def _upsample(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class AttentionModule(nn.Module):
    def __init__(self, chs, downsamplings, p=1, t=2, r=1):
        super().__init__()
        if downsamplings < 1:
            raise ValueError(f"AttentionModule: downsamplings must be >= 1, got {downsamplings}")
        self.pre = nn.Sequential(*[Unit(chs, chs) for _ in range(p)])
        self.trunk = nn.Sequential(*[Unit(chs, chs) for _ in range(t)])
        d = downsamplings
        # bottom-up: r units after each max-pool (2r at the lowest level); skip connections from all but the lowest
        self.down = nn.ModuleList([nn.Sequential(*[Unit(chs, chs) for _ in range(r * (2 if i == d - 1 else 1))])
                                   for i in range(d)])
        self.skip = nn.ModuleList([Unit(chs, chs) for _ in range(d - 1)])
        # top-down: r units at each level above the lowest (after upsampling and adding the skip connection)
        self.up = nn.ModuleList([nn.Sequential(*[Unit(chs, chs) for _ in range(r)]) for _ in range(d - 1)])
        self.mask = MaskHead(chs)
        self.post = nn.Sequential(*[Unit(chs, chs) for _ in range(p)])

    def forward(self, x):
        x = self.pre(x)
        trunk = self.trunk(x)
        feats, y = [], x
        for i, down in enumerate(self.down):
            y = down(F.max_pool2d(y, 3, 2, 1))
            feats.append(y)
        # feats[i] is level i + 1 (level 0 is x); go up from the lowest, adding the skip connections
        for i in reversed(range(len(self.skip))):
            y = self.up[i](_upsample(y, feats[i]) + self.skip[i](feats[i]))
        mask = self.mask(_upsample(y, trunk))
        return self.post(torch.addcmul(trunk, mask, trunk))  # (1 + mask) * trunk


class ResidualAttentionNet(nn.Module):
    def __init__(self, attention_modules=MODULES[56], num_classes=1000, in_chans=3, dropout=0.0, p=1, t=2, r=1):
        super().__init__()
        self.conv1 = ConvBnAct(in_chans, 64, 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = 64
        for i, (n, d) in enumerate(zip(attention_modules, DOWNSAMPLINGS)):
            out = STAGE_CHANNELS[i]
            blocks = [Unit(c, out, 1 if i == 0 else 2)] + [AttentionModule(out, d, p, t, r) for _ in range(n)]
            setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))
            c = out
        out = STAGE_CHANNELS[-1]
        self.stage4 = nn.Sequential(Unit(c, out, 2), Unit(out, out), Unit(out, out))
        self.num_features = out
        self.norm = nn.BatchNorm2d(out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = Linear(out, num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.conv1(to_channels_last_for_inference(self, x)))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return bn_act(self, self.norm, x, "relu")

    def forward(self, x):
        return self.fc(self.dropout(self.forward_features(x).mean([2, 3])))


def _register(depth):
    name = f"ran{depth}"

    def build(weights=None, **kwargs):
        return finish(ResidualAttentionNet(MODULES[depth], **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"Residual Attention Network Attention-{depth}; options num_classes, in_chans, dropout, "
                     "p / t / r (the attention module's unit counts), weights.")
    globals()[name] = register_model(f"residual_attention_{depth}", f"attention{depth}",
                                     f"residual_attention_network_{depth}")(build)


for _depth in MODULES:
    _register(_depth)
