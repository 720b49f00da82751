"""Dual Path Networks (Chen et al. 2017): pre-activation bottleneck blocks (BN-ReLU-1x1, BN-ReLU-grouped 3x3,
BN-ReLU-1x1) whose output splits into a residual part (added) and a densely connected part (concatenated); the
two paths travel as one concatenated tensor. The layout is timm's (features.conv1_1.conv/bn, features.convS_B
with c1x1_w_s1 / c1x1_w_s2 / c1x1_a / c3x3_b / c1x1_c each .bn + .conv, features.conv5_bn_ac.bn, a 1x1-conv
classifier), so timm dpn92 / dpn98 / dpn131 state_dicts load unchanged. BN eps is 1e-3 as in the MXNet
originals; the final BN is followed by ReLU (timm's DPN asks for ELU there, but its norm-act factory keeps the
ReLU, so its models run ReLU).

Eval mode: a pre-activation BN + ReLU whose input comes from a single conv is folded onto the OUTPUT of that
conv (conv -> BN -> ReLU), so c1x1_a runs pwconv_bn_act with c3x3_b's BN and ReLU fused in, the grouped 3x3
runs one conv with c1x1_c's BN folded into its weight and bias (+ ReLU), and c1x1_c's conv runs pwconv_bn_act
(scale 1). The BNs that read the block input (shared by the projection and c1x1_a) run as one folded
multiply-add + ReLU; the stem runs one 7x7 conv with BN folded. Train mode runs the same order unfused."""
import torch
import torch.nn.functional as F
from torch import nn

from ._common import finish, to_channels_last_for_inference
from ._conv_bn import bn_act, conv_bn_act
from ._registry import register_model

EPS = 1e-3


class BnAct(nn.Module):
    def __init__(self, chs):
        super().__init__()
        self.bn = nn.BatchNorm2d(chs, eps=EPS)


class BnActConv2d(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride, groups=1):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs, eps=EPS)
        pad = ((stride - 1) + (kernel_size - 1)) // 2  # timm's symmetric padding
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, pad, groups=groups, bias=False)


class ConvNormAct(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=EPS)

    def forward(self, x):
        return conv_bn_act(self, self.conv, self.bn, x, "relu")


class DualPathBlock(nn.Module):
    def __init__(self, in_chs, num_1x1_a, num_3x3_b, num_1x1_c, inc, groups, block_type="normal"):
        super().__init__()
        self.num_1x1_c = num_1x1_c
        stride = 2 if block_type == "down" else 1
        self.c1x1_w_s1 = self.c1x1_w_s2 = None
        if block_type != "normal":
            proj = BnActConv2d(in_chs, num_1x1_c + 2 * inc, 1, stride)
            if stride == 2:
                self.c1x1_w_s2 = proj
            else:
                self.c1x1_w_s1 = proj
        self.c1x1_a = BnActConv2d(in_chs, num_1x1_a, 1, 1)
        self.c3x3_b = BnActConv2d(num_1x1_a, num_3x3_b, 3, stride, groups)
        self.c1x1_c = BnActConv2d(num_3x3_b, num_1x1_c + inc, 1, 1)

    def forward(self, x):
        proj = self.c1x1_w_s1 if self.c1x1_w_s1 is not None else self.c1x1_w_s2
        x_s = x if proj is None else conv_bn_act(self, proj.conv, None, bn_act(self, proj.bn, x, "relu"), "identity")
        y = bn_act(self, self.c1x1_a.bn, x, "relu")
        y = conv_bn_act(self, self.c1x1_a.conv, self.c3x3_b.bn, y, "relu")
        y = conv_bn_act(self, self.c3x3_b.conv, self.c1x1_c.bn, y, "relu")
        y = conv_bn_act(self, self.c1x1_c.conv, None, y, "identity")
        n = self.num_1x1_c
        return torch.cat([x_s[:, :n] + y[:, :n], x_s[:, n:], y[:, n:]], dim=1)


class DPN(nn.Module):
    def __init__(self, k_sec=(3, 4, 20, 3), inc_sec=(16, 32, 24, 128), k_r=96, groups=32, num_init_features=64,
                 num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        self.dropout = dropout
        blocks = {"conv1_1": ConvNormAct(in_chans, num_init_features, 7, 2),
                  "conv1_pool": nn.MaxPool2d(3, 2, 1)}
        in_chs = num_init_features
        for i, (bw_base, depth, inc) in enumerate(zip((64, 128, 256, 512), k_sec, inc_sec)):
            bw, r = bw_base * 4, k_r * bw_base // 64
            blocks[f"conv{i + 2}_1"] = DualPathBlock(in_chs, r, r, bw, inc, groups, "proj" if i == 0 else "down")
            in_chs = bw + 3 * inc
            for j in range(2, depth + 1):
                blocks[f"conv{i + 2}_{j}"] = DualPathBlock(in_chs, r, r, bw, inc, groups)
                in_chs += inc
        blocks["conv5_bn_ac"] = BnAct(in_chs)
        self.features = nn.Sequential()
        for name, m in blocks.items():
            self.features.add_module(name, m)
        self.num_features = in_chs
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(in_chs, num_classes, 1)

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        for m in list(self.features)[:-1]:
            x = m(x)
        return bn_act(self, self.features.conv5_bn_ac.bn, x, "relu")

    def forward(self, x):
        x = F.dropout(self.avgpool(self.forward_features(x)), self.dropout, self.training)
        return self.classifier(x).flatten(1)


# name: (stem channels, k_r, groups, blocks per stage, dense increments per stage) -- the paper's table 1
VARIANTS = {
    "dpn92": (64, 96, 32, (3, 4, 20, 3), (16, 32, 24, 128)),
    "dpn98": (96, 160, 40, (3, 6, 20, 3), (16, 32, 32, 128)),
    "dpn131": (128, 160, 40, (4, 8, 28, 3), (16, 32, 32, 128)),
}


def _variant(name, stem, k_r, groups, k_sec, inc_sec):
    def build(weights=None, **kwargs):
        return finish(DPN(k_sec, inc_sec, k_r, groups, stem, **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"DPN-{name[3:]}; options num_classes, in_chans, dropout, weights."
    globals()[name] = register_model()(build)


for _name, _row in VARIANTS.items():
    _variant(_name, *_row)
