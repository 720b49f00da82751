"""Xception (Chollet 2017): entry flow (two 3x3 convs, three strided blocks), middle flow (eight 728-channel
blocks of three separable convs), exit flow (a strided block, two separable convs). The layout is timm's
legacy_xception (conv1/bn1, conv2/bn2, block1..12 with rep / skip / skipbn, conv3/bn3, conv4/bn4, fc), so its
state_dicts load unchanged.

Eval mode: each separable conv's depthwise 3x3 (no BN, no bias in Xception) runs dwconv_bn_act with scale 1 and
shift 0, its pointwise 1x1 + the BN behind it runs pwconv_bn_act with the following ReLU fused in (and the block's
residual add when the block ends on that BN); the stem convs and the strided 1x1 skip convs run one conv with BN
folded. Train mode runs the same modules unfused."""
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._registry import register_model


class SeparableConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x, bn=None, act="identity", residual=None):
        """act(bn(pointwise(conv1(x))) + residual)."""
        x = conv_bn_act(self, self.conv1, None, x, "identity")
        return conv_bn_act(self, self.pointwise, bn, x, act, residual)


class Block(nn.Module):
    def __init__(self, in_channels, out_channels, reps, stride=1, start_with_relu=True, grow_first=True):
        super().__init__()
        if out_channels != in_channels or stride != 1:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        else:
            self.skip = None
        rep = []
        for i in range(reps):
            if grow_first:
                inc, outc = (in_channels if i == 0 else out_channels), out_channels
            else:
                inc, outc = in_channels, (in_channels if i < reps - 1 else out_channels)
            rep += [nn.ReLU(), SeparableConv2d(inc, outc), nn.BatchNorm2d(outc)]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, inp):
        skip = inp if self.skip is None else conv_bn_act(self, self.skip, self.skipbn, inp, "identity")
        mods, x, i = list(self.rep), inp, 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, SeparableConv2d):  # sep conv, BN [, ReLU of the next sep conv]
                j = i + 2
                act = "relu" if j < len(mods) and isinstance(mods[j], nn.ReLU) else "identity"
                last = j == len(mods)
                x = m(x, mods[i + 1], act, skip if last else None)
                if last:
                    return x
                i = j + (act == "relu")
            elif isinstance(m, nn.ReLU):
                x = F.relu(x)
                i += 1
            else:
                x = m(x)
                i += 1
        return x + skip


class Xception(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        self.dropout = dropout
        self.num_features = 2048
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = Block(64, 128, 2, 2, start_with_relu=False)
        self.block2 = Block(128, 256, 2, 2)
        self.block3 = Block(256, 728, 2, 2)
        for i in range(4, 12):  # middle flow
            setattr(self, f"block{i}", Block(728, 728, 3, 1))
        self.block12 = Block(728, 1024, 2, 2, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, self.num_features)
        self.bn4 = nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = Linear(self.num_features, num_classes)

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        x = conv_bn_act(self, self.conv1, self.bn1, x, "relu")
        x = conv_bn_act(self, self.conv2, self.bn2, x, "relu")
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = self.conv3(x, self.bn3, "relu")
        return self.conv4(x, self.bn4, "relu")

    def forward(self, x):
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(F.dropout(x, self.dropout, self.training))


@register_model("legacy_xception")
def xception(weights=None, **kwargs):
    """Xception (Chollet 2017), timm's legacy_xception layout; options num_classes, in_chans, dropout, weights."""
    return finish(Xception(**kwargs), weights)
