"""GoogLeNet (Inception V1, Szegedy et al. 2015) and Inception V3 (Szegedy et al. 2016) with torchvision's
layout (BasicConv2d = conv + bn (eps 1e-3) + ReLU; conv1..3 / inception3a..5b / aux1, aux2 for GoogLeNet,
Conv2d_1a_3x3 .. Mixed_7c / AuxLogits for Inception V3), so torchvision state_dicts load unchanged; a
checkpoint's auxiliary-head tensors are dropped when the model is built without them (aux_logits=False).

As torchvision, GoogLeNet's "5x5" branch is a 3x3 conv (the torchvision / Caffe-port layout the checkpoints
use). Auxiliary heads run in train mode only (aux_logits=True), returning (logits, aux...) named tuples.
Eval mode: every BasicConv2d folds its BN: 1x1 convs run pwconv_bn_act, the others one conv + ReLU."""
from collections import OrderedDict, namedtuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._registry import register_model

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


class BasicConv2d(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=0.001)

    def forward(self, x):
        return conv_bn_act(self, self.conv, self.bn, x, "relu")


def _transform_input(x):
    """ImageNet-normalised input -> the (x - 0.5) / 0.5 scaling the original ports were trained on."""
    return torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                      x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                      x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)


def _drop_aux(prefixes):
    """Remap: a checkpoint with auxiliary heads into a model built without them."""
    def remap(sd, model):
        out = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(prefixes))
        return out if len(out) < len(sd) else None
    return remap


# ---------------------------------------------------------------------------------------------- GoogLeNet
# inception modules: (name, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj), "M" max-pool 3/2 ceil,
# "M2" max-pool 2/2 ceil (the paper's table 1; the pools named maxpool3, maxpool4 as torchvision)
GOOGLENET = [("inception3a", 64, 96, 128, 16, 32, 32), ("inception3b", 128, 128, 192, 32, 96, 64), "M",
             ("inception4a", 192, 96, 208, 16, 48, 64), ("inception4b", 160, 112, 224, 24, 64, 64),
             ("inception4c", 128, 128, 256, 24, 64, 64), ("inception4d", 112, 144, 288, 32, 64, 64),
             ("inception4e", 256, 160, 320, 32, 128, 128), "M2",
             ("inception5a", 256, 160, 320, 32, 128, 128), ("inception5b", 384, 192, 384, 48, 128, 128)]
GOOGLENET_AUX = {"inception4a": "aux1", "inception4d": "aux2"}  # auxiliary heads after these modules


class Inception(nn.Module):
    def __init__(self, in_chs, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_chs, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_chs, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(in_chs, pool_proj, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetAux(nn.Module):
    def __init__(self, in_chs, num_classes, dropout=0.7):
        super().__init__()
        self.conv = BasicConv2d(in_chs, 128, 1)
        self.fc1 = Linear(2048, 1024)
        self.fc2 = Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, aux_logits=False, transform_input=False, dropout=0.2,
                 dropout_aux=0.7, rows=GOOGLENET):
        super().__init__()
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.conv1 = BasicConv2d(in_chans, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.order, c, pools = [], 192, 3
        for row in rows:
            if row in ("M", "M2"):
                name = f"maxpool{pools}"
                setattr(self, name, nn.MaxPool2d(3 if row == "M" else 2, 2, ceil_mode=True))
                pools += 1
            else:
                name = row[0]
                setattr(self, name, Inception(c, *row[1:]))
                c = row[1] + row[3] + row[5] + row[6]
                if aux_logits and name in GOOGLENET_AUX:
                    setattr(self, GOOGLENET_AUX[name], GoogLeNetAux(c, num_classes, dropout_aux))
            self.order.append(name)
        self.num_features = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = Linear(c, num_classes)

    def forward(self, x):
        if self.transform_input:
            x = _transform_input(x)
        x = to_channels_last_for_inference(self, x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        aux = {}
        for name in self.order:
            x = getattr(self, name)(x)
            if self.training and self.aux_logits and name in GOOGLENET_AUX:
                aux[GOOGLENET_AUX[name]] = getattr(self, GOOGLENET_AUX[name])(x)
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux["aux2"], aux["aux1"])
        return x


# ------------------------------------------------------------------------------------------- Inception V3
def _a(pool_features):
    return [[("branch1x1", 64, 1)],
            [("branch5x5_1", 48, 1), ("branch5x5_2", 64, 5, 1, 2)],
            [("branch3x3dbl_1", 64, 1), ("branch3x3dbl_2", 96, 3, 1, 1), ("branch3x3dbl_3", 96, 3, 1, 1)],
            ["avg", ("branch_pool", pool_features, 1)]]


def _c(c7):
    return [[("branch1x1", 192, 1)],
            [("branch7x7_1", c7, 1), ("branch7x7_2", c7, (1, 7), 1, (0, 3)), ("branch7x7_3", 192, (7, 1), 1, (3, 0))],
            [("branch7x7dbl_1", c7, 1), ("branch7x7dbl_2", c7, (7, 1), 1, (3, 0)),
             ("branch7x7dbl_3", c7, (1, 7), 1, (0, 3)), ("branch7x7dbl_4", c7, (7, 1), 1, (3, 0)),
             ("branch7x7dbl_5", 192, (1, 7), 1, (0, 3))],
            ["avg", ("branch_pool", 192, 1)]]


# Block styles A-E (the paper's figures 5, 6, 7, 10 as torchvision builds them): branches of convs
# (name, out, kernel, stride, padding), "avg" (3x3/1 avg-pool) or "max" (3x3/2 max-pool) steps, and
# ("split", conv, conv): two convs on the same input, concatenated. A block concatenates its branches.
INCEPTION_B = [[("branch3x3", 384, 3, 2)],
               [("branch3x3dbl_1", 64, 1), ("branch3x3dbl_2", 96, 3, 1, 1), ("branch3x3dbl_3", 96, 3, 2)],
               ["max"]]
INCEPTION_D = [[("branch3x3_1", 192, 1), ("branch3x3_2", 320, 3, 2)],
               [("branch7x7x3_1", 192, 1), ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
                ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)), ("branch7x7x3_4", 192, 3, 2)],
               ["max"]]
INCEPTION_E = [[("branch1x1", 320, 1)],
               [("branch3x3_1", 384, 1), ("split", ("branch3x3_2a", 384, (1, 3), 1, (0, 1)),
                                          ("branch3x3_2b", 384, (3, 1), 1, (1, 0)))],
               [("branch3x3dbl_1", 448, 1), ("branch3x3dbl_2", 384, 3, 1, 1),
                ("split", ("branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)), ("branch3x3dbl_3b", 384, (3, 1), 1, (1, 0)))],
               ["avg", ("branch_pool", 192, 1)]]
# stem: BasicConv2d (name, out, kernel, stride, padding) and "max" pools; then the mixed blocks
INCEPTION_V3_STEM = [("Conv2d_1a_3x3", 32, 3, 2), ("Conv2d_2a_3x3", 32, 3), ("Conv2d_2b_3x3", 64, 3, 1, 1),
                     ("maxpool1",), ("Conv2d_3b_1x1", 80, 1), ("Conv2d_4a_3x3", 192, 3), ("maxpool2",)]
INCEPTION_V3 = [("Mixed_5b", _a(32)), ("Mixed_5c", _a(64)), ("Mixed_5d", _a(64)), ("Mixed_6a", INCEPTION_B),
                ("Mixed_6b", _c(128)), ("Mixed_6c", _c(160)), ("Mixed_6d", _c(160)), ("Mixed_6e", _c(192)),
                ("Mixed_7a", INCEPTION_D), ("Mixed_7b", INCEPTION_E), ("Mixed_7c", INCEPTION_E)]
INCEPTION_V3_AUX_AFTER = "Mixed_6e"


def _conv(in_chs, spec):
    _, out, k, *rest = spec
    return BasicConv2d(in_chs, out, k, *rest)


class InceptionBlock(nn.Module):
    """One Inception V3 block from its branch table; convs are attributes named as torchvision's."""

    def __init__(self, in_chs, branches):
        super().__init__()
        self.branches = branches
        self.out_chs = 0
        for branch in branches:
            c = in_chs
            for step in branch:
                if step in ("avg", "max"):
                    continue
                if step[0] == "split":
                    for s in step[1:]:
                        setattr(self, s[0], _conv(c, s))
                    c = sum(s[1] for s in step[1:])
                else:
                    setattr(self, step[0], _conv(c, step))
                    c = step[1]
            self.out_chs += c

    def forward(self, x):
        outs = []
        for branch in self.branches:
            y = x
            for step in branch:
                if step == "avg":
                    y = F.avg_pool2d(y, 3, 1, 1)
                elif step == "max":
                    y = F.max_pool2d(y, 3, 2)
                elif step[0] == "split":
                    y = torch.cat([getattr(self, s[0])(y) for s in step[1:]], 1)
                else:
                    y = getattr(self, step[0])(y)
            outs.append(y)
        return torch.cat(outs, 1)


class InceptionV3Aux(nn.Module):
    def __init__(self, in_chs, num_classes):
        super().__init__()
        self.conv0 = BasicConv2d(in_chs, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, aux_logits=False, transform_input=False, dropout=0.5,
                 stem=INCEPTION_V3_STEM, blocks=INCEPTION_V3):
        super().__init__()
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.stem, c = [], in_chans
        for spec in stem:
            if len(spec) == 1:
                setattr(self, spec[0], nn.MaxPool2d(3, 2))
            else:
                setattr(self, spec[0], _conv(c, spec))
                c = spec[1]
            self.stem.append(spec[0])
        self.blocks = []
        for name, branches in blocks:
            block = InceptionBlock(c, branches)
            setattr(self, name, block)
            c = block.out_chs
            self.blocks.append(name)
            if aux_logits and name == INCEPTION_V3_AUX_AFTER:
                self.AuxLogits = InceptionV3Aux(c, num_classes)
        self.num_features = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = Linear(c, num_classes)

    def forward(self, x):
        if self.transform_input:
            x = _transform_input(x)
        x = to_channels_last_for_inference(self, x)
        aux = None
        for name in self.stem + self.blocks:
            x = getattr(self, name)(x)
            if name == INCEPTION_V3_AUX_AFTER and self.training and self.aux_logits:
                aux = self.AuxLogits(x)
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


@register_model("tv_googlenet", "inception_v1")
def googlenet(weights=None, **kwargs):
    """GoogLeNet (Inception V1); options num_classes, in_chans, aux_logits (aux1, aux2 heads in train mode),
    transform_input, dropout, dropout_aux."""
    return finish(GoogLeNet(**kwargs), weights, remaps=(_drop_aux(("aux1.", "aux2.")),))


@register_model("tv_inception_v3", "inceptionv3")
def inception_v3(weights=None, **kwargs):
    """Inception V3 (input 75x75 or larger, 299x299 as trained); options num_classes, in_chans, aux_logits
    (AuxLogits head in train mode), transform_input, dropout."""
    return finish(InceptionV3(**kwargs), weights, remaps=(_drop_aux(("AuxLogits.",)),))
