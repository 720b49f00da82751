"""Inception V2 = BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", figure 5 in the appendix): GoogLeNet with batch normalization after every conv,
the 5x5 convs replaced by two 3x3 convs ("double #3x3"), three 28x28 modules (3a, 3b, 3c), average or max pooling
inside the modules, and stride-2 modules (3c, 4e: no 1x1 branch, stride-2 3x3 convs, a stride-2 max-pool passing
its input through) instead of pooling layers between them.

Layer table (figure 5): conv 7x7/2 64, max-pool 3x3/2, conv 1x1 64, conv 3x3 192, max-pool 3x3/2, then modules
(#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool + proj):
  3a 64 64 64 64 96 avg+32 | 3b 64 64 96 64 96 avg+64 | 3c 0 128 160 64 96 max+pass /2
  4a 224 64 96 96 128 avg+128 | 4b 192 96 128 96 128 avg+128 | 4c 160 128 160 128 160 avg+128
  4d 96 128 192 160 192 avg+128 | 4e 0 128 192 192 256 max+pass /2 | 5a 352 192 320 160 224 avg+128
  5b 352 192 320 192 224 max+128; global average pool, fc.
The figure's "output size" column says 576 channels after 4c / 4d and 1024 after 4e, but its filter columns add up
to 608, 608 and 1056 (4c: 160 + 160 + 160 + 128); the filter columns define the network (as in the Caffe model the
released checkpoints come from), so 4d / 4e / 5a read 608 / 608 / 1056 channels.

Layout: the Caffe-port one of Cadene's pretrained-models bninception (flat conv1_7x7_s2 / conv1_7x7_s2_bn, ...,
inception_3a_1x1 / inception_3a_1x1_bn, ..., last_linear; convs with bias as in the Caffe model; BN eps 1e-5), so
that checkpoint loads unchanged (it expects BGR input in 0..255 minus the mean [104, 117, 128]). Pools use
ceil_mode as in Caffe, so the stride-2 modules need even-sized inputs: an input whose side is a multiple of 32
(224 as trained, 32 the smallest) always works. Checkpoints saved before PyTorch 0.4.1
lack BN's num_batches_tracked: those load too.

Oracle: the paper gives no parameter count. The filter columns determine 11,295,240 parameters with 1000 classes
(11,285,224 without the conv biases, which BN makes redundant): the 11.3M usually quoted for the Caffe model. The
tests check that count and walk the layer table.

Eval mode: every conv's BN (and bias) is folded: the 1x1 convs run pwconv_bn_act with ReLU, the 3x3 / 7x7 convs one
conv with folded weight and bias + ReLU; train mode runs the plain conv, BN, ReLU chain."""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import conv_bn_act
from ._registry import register_model


def add_bn_counters(sd, model):
    """Remap: a checkpoint whose only missing keys are BN num_batches_tracked counters (saved before PyTorch
    0.4.1) gets the model's own counters."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if not missing or not all(k.endswith("num_batches_tracked") for k in missing):
        return None
    out = OrderedDict(sd)
    for k in missing:
        out[k] = own[k].clone()
    return out

# (name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj (0: pass through), stride)
MODULES = [("3a", 64, 64, 64, 64, 96, "avg", 32, 1), ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
           ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
           ("4a", 224, 64, 96, 96, 128, "avg", 128, 1), ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
           ("4c", 160, 128, 160, 128, 160, "avg", 128, 1), ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
           ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
           ("5a", 352, 192, 320, 160, 224, "avg", 128, 1), ("5b", 352, 192, 320, 192, 224, "max", 128, 1)]
STEM = [("conv1_7x7_s2", 64, 7, 2, 3), "pool1_3x3_s2", ("conv2_3x3_reduce", 64, 1, 1, 0), ("conv2_3x3", 192, 3, 1, 1),
        "pool2_3x3_s2"]


def module_out_channels(row, in_chs):
    _, c1, _, c3, _, cd, _, proj, _ = row
    return c1 + c3 + cd + (proj if proj else in_chs)


class BNInception(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, dropout=0.0, rows=MODULES):
        super().__init__()
        c = in_chans
        for spec in STEM:
            if isinstance(spec, str):
                continue
            name, out, k, s, p = spec
            self._add(name, c, out, k, s, p)
            c = out
        self.rows = rows
        for row in rows:
            b, c1, r3, c3, rd, cd, pool, proj, s = row
            b = f"inception_{b}"
            if c1:
                self._add(f"{b}_1x1", c, c1, 1)
            self._add(f"{b}_3x3_reduce", c, r3, 1)
            self._add(f"{b}_3x3", r3, c3, 3, s, 1)
            self._add(f"{b}_double_3x3_reduce", c, rd, 1)
            self._add(f"{b}_double_3x3_1", rd, cd, 3, 1, 1)
            self._add(f"{b}_double_3x3_2", cd, cd, 3, s, 1)
            if proj:
                self._add(f"{b}_pool_proj", c, proj, 1)
            c = module_out_channels(row, c)
        self.num_features = c
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.last_linear = Linear(c, num_classes)

    def _add(self, name, in_chs, out_chs, k, stride=1, padding=0):
        setattr(self, name, nn.Conv2d(in_chs, out_chs, k, stride, padding))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(out_chs))

    def _cbr(self, name, x):
        return conv_bn_act(self, getattr(self, name), getattr(self, f"{name}_bn"), x, "relu")

    def _module(self, row, x):
        b, c1, _, _, _, _, pool, proj, s = row
        b = f"inception_{b}"
        if s == 2 and (x.shape[-2] % 2 or x.shape[-1] % 2):
            raise ValueError(f"BN-Inception: {b} needs an even-sized input map, got {tuple(x.shape[-2:])} (its "
                             "stride-2 convs and ceil-mode pool disagree on odd sizes); use an input side that is "
                             "a multiple of 32")
        outs = [self._cbr(f"{b}_1x1", x)] if c1 else []
        outs.append(self._cbr(f"{b}_3x3", self._cbr(f"{b}_3x3_reduce", x)))
        y = self._cbr(f"{b}_double_3x3_1", self._cbr(f"{b}_double_3x3_reduce", x))
        outs.append(self._cbr(f"{b}_double_3x3_2", y))
        if pool == "avg":
            y = F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
        else:
            y = F.max_pool2d(x, 3, s, 1 if s == 1 else 0, ceil_mode=True)
        outs.append(self._cbr(f"{b}_pool_proj", y) if proj else y)
        return torch.cat(outs, 1)

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        x = self._cbr("conv1_7x7_s2", x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for row in self.rows:
            x = self._module(row, x)
        return x

    def forward(self, x):
        return self.last_linear(self.dropout(self.forward_features(x).mean([2, 3])))


@register_model("bninception", "bn_inception")
def inception_v2(weights=None, **kwargs):
    """Inception V2 (BN-Inception), Cadene's pretrained-models layout; options num_classes, in_chans, dropout,
    weights. Input sides that are multiples of 32 (224 as trained)."""
    return finish(BNInception(**kwargs), weights, remaps=(add_bn_counters,))
