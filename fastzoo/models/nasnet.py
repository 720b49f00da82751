"""NASNet-A (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image Recognition"): a 3x3
stride-2 stem conv, two reduction cells as stem, then three stages of N normal cells with a reduction cell
between stages (filters doubling at each reduction). Every variant is one description, `_VARIANTS`: N, the
penultimate filters (the channels of the last stage are 6x a normal cell's filters, the filters of stage s are
penultimate / 24 * 2**s), the stem filters and TF-slim's skip_reduction_layer_input (which earlier output the
first cell after a reduction reads as its second input):

    nasnet_large   NASNet-A 6 @ 4032, stem 96  (timm nasnetalarge, the oracle; 88.75M params)
    nasnet_mobile  NASNet-A 4 @ 1056, stem 32  (paper Table 2: 5.3M params, 564M mult-adds at 224)

The layout is timm's nasnetalarge (conv0.conv/bn, cell_stem_0/1, cell_i, reduction_cell_0/1 with conv_1x1,
conv_prev_1x1 or path_1/path_2/final_path_bn, comb_iter_k_left/right.separable_1/2.{depthwise,pointwise}_conv2d,
bn_sep_1/2, last_linear), so its state_dicts load unchanged; the mobile model numbers its cells as Cadene's
nasnetamobile does (each stage starts at a multiple of 6: cell_0-3, cell_6-9, cell_12-15), so that checkpoint's
keys are the same. Padding is TF "SAME" as in timm (asymmetric for the stride-2 convs and pools).

Every reader of a cell's output starts with a ReLU, so each cell (and the stem conv) returns its output already
activated, once, instead of each of its two or three readers applying its own ReLU.

Eval mode, fused ops:
  - separable conv (ReLU -> dw KxK -> pw 1x1 -> BN): the dw conv runs dwconv_bn_act with scale 1 and shift 0
    (NASNet has no BN between dw and pw; the stride-2 ones on an explicitly "SAME"-padded input), the pw conv +
    BN runs pwconv_bn_act, with the branch's inner ReLU fused in (first separable conv) or the add that combines
    the branch with its neighbour fused in as the residual (second separable conv);
  - the 1x1 ReLU-conv-BN input adapters run pwconv_bn_act (with the ReLU of their readers fused in where no
    reader needs the raw value: the reduction cells' conv_prev_1x1 and factorized path);
  - the factorized reduction (two 1x1 convs on the stride-2 subsampled and the shifted-subsampled input, one BN
    over their concatenation) runs as two pwconv_bn_act, each with its half of the BN;
  - the stem 3x3 conv runs one conv with BN folded; pools, the remaining adds and the concatenations are plain.
Train mode runs the same modules unfused, in timm's order."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..layers import Linear
from ..layers.bn_fold import fold_bn
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import _cache, _caches, conv_bn_act
from ._registry import register_model

_BN = dict(eps=0.001, momentum=0.1)

# name: (cells per stage N, penultimate filters, stem filters, skip_reduction_layer_input)
_VARIANTS = {
    "nasnet_large": (6, 4032, 96, True),
    "nasnet_mobile": (4, 1056, 32, False),
}


def _pad_same(x, k, stride, value=0.0):
    """TF "SAME" padding for a KxK window with `stride` (timm's pad_same): the extra pixel goes right/bottom."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + k - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + k - iw, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


def _max_pool_s2(x):
    return F.max_pool2d(_pad_same(x, 3, 2, -float("inf")), 3, 2)


def _avg_pool_s2(x):
    return F.avg_pool2d(_pad_same(x, 3, 2), 3, 2)  # as timm: the zero padding counts in the mean


def _avg_pool(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class SeparableConv2d(nn.Module):
    """dw KxK (no bias, no BN) then pw 1x1; the BN behind it belongs to the branch (timm's bn_sep_i)."""

    def __init__(self, in_chs, out_chs, kernel_size, stride):
        super().__init__()
        self.stride = stride
        pad = kernel_size // 2 if stride == 1 else 0  # stride 2: explicit "SAME" padding in forward
        self.depthwise_conv2d = nn.Conv2d(in_chs, in_chs, kernel_size, stride, pad, groups=in_chs, bias=False)
        self.pointwise_conv2d = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x, bn, act="identity", residual=None):
        """act(bn(pw(dw(x))) + residual)."""
        if self.stride != 1:
            x = _pad_same(x, self.depthwise_conv2d.kernel_size[0], self.stride)
        x = conv_bn_act(self, self.depthwise_conv2d, None, x, "identity")
        return conv_bn_act(self, self.pointwise_conv2d, bn, x, act, residual)


class BranchSeparables(nn.Module):
    """ReLU, separable conv (stride s), BN, ReLU, separable conv, BN; `x` arrives already ReLU'd."""

    def __init__(self, in_chs, out_chs, kernel_size, stride=1, stem_cell=False):
        super().__init__()
        mid = out_chs if stem_cell else in_chs
        self.separable_1 = SeparableConv2d(in_chs, mid, kernel_size, stride)
        self.bn_sep_1 = nn.BatchNorm2d(mid, **_BN)
        self.separable_2 = SeparableConv2d(mid, out_chs, kernel_size, 1)
        self.bn_sep_2 = nn.BatchNorm2d(out_chs, **_BN)

    def forward(self, x_relu, residual=None):
        x = self.separable_1(x_relu, self.bn_sep_1, "relu")
        return self.separable_2(x, self.bn_sep_2, "identity", residual)


class ConvBn(nn.Module):
    """(ReLU,) 1x1 conv, BN (timm's ActConvBn; the ReLU is applied by whoever produced the input)."""

    def __init__(self, in_chs, out_chs, kernel_size=1, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, **_BN)

    def forward(self, x, act="identity"):
        return conv_bn_act(self, self.conv, self.bn, x, act)


class _Path(nn.Module):
    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)


def _factorized_reduction(cell, x_relu, act="identity"):
    """act(final_path_bn(cat(path_1.conv(x[::2, ::2]), path_2.conv(x shifted by one pixel, [::2, ::2])))):
    timm's AvgPool2d(1, 2) and ZeroPad2d((-1, 1, -1, 1)); eval mode runs each half with its half of the BN."""
    x1 = F.avg_pool2d(x_relu, 1, 2)
    x2 = F.avg_pool2d(F.pad(x_relu, (-1, 1, -1, 1)), 1, 2)
    bn = cell.final_path_bn
    if cell.training:
        _caches(cell).clear()  # the running statistics change in place
        y = bn(torch.cat([cell.path_1.conv(x1), cell.path_2.conv(x2)], 1))
        return F.relu(y) if act == "relu" else y
    scale, shift = _cache(cell, id(bn)).get((bn.weight, bn.bias, bn.running_mean, bn.running_var),
                                            lambda: fold_bn(bn))
    h = cell.path_1.conv.out_channels
    return torch.cat([ops.pwconv_bn_act(x1, cell.path_1.conv.weight, scale[:h], shift[:h], act),
                      ops.pwconv_bn_act(x2, cell.path_2.conv.weight, scale[h:], shift[h:], act)], 1)


def _relu_out(x):
    """The activated cell output (see the module docstring): x is a fresh concatenation, ReLU'd in place."""
    return F.relu(x, inplace=True)


class NormalCell(nn.Module):
    """NASNet-A normal cell of `filters` channels per branch, output 6 * filters. Inputs x (the previous cell) and
    x_prev (the one before); `factorized` (timm's FirstCell): x_prev has twice x's resolution and is reduced by
    the factorized path instead of conv_prev_1x1."""

    def __init__(self, in_left, in_right, filters, factorized=False):
        super().__init__()
        self.factorized = factorized
        if factorized:
            self.path_1 = _Path(in_left, filters // 2)
            self.path_2 = _Path(in_left, filters // 2)
            self.final_path_bn = nn.BatchNorm2d(filters, **_BN)
        else:
            self.conv_prev_1x1 = ConvBn(in_left, filters)
        self.conv_1x1 = ConvBn(in_right, filters)
        self.comb_iter_0_left = BranchSeparables(filters, filters, 5)
        self.comb_iter_0_right = BranchSeparables(filters, filters, 3)
        self.comb_iter_1_left = BranchSeparables(filters, filters, 5)
        self.comb_iter_1_right = BranchSeparables(filters, filters, 3)
        self.comb_iter_4_left = BranchSeparables(filters, filters, 3)

    def forward(self, x, x_prev):
        """x, x_prev: activated outputs of the previous two cells."""
        left = _factorized_reduction(self, x_prev) if self.factorized else self.conv_prev_1x1(x_prev)
        right = self.conv_1x1(x)
        left_relu, right_relu = F.relu(left), F.relu(right)
        c0 = self.comb_iter_0_left(right_relu, self.comb_iter_0_right(left_relu))
        c1 = self.comb_iter_1_left(left_relu, self.comb_iter_1_right(left_relu))
        c2 = _avg_pool(right) + left
        c3 = _avg_pool(left) * 2  # timm's comb_iter_3_left + comb_iter_3_right: the same pool of the same input
        c4 = self.comb_iter_4_left(right_relu, right)
        return _relu_out(torch.cat([left, c0, c1, c2, c3, c4], 1))


class ReductionCell(nn.Module):
    """NASNet-A reduction cell (stride 2) of `filters` channels per branch, output 4 * filters. Its second input
    comes through conv_prev_1x1, or (`left="stem"`, cell_stem_0) is x itself, read by separable convs that
    change the channel count, or (`left="factorized"`, cell_stem_1) the factorized path of x_prev."""

    def __init__(self, in_left, in_right, filters, left="conv"):
        super().__init__()
        self.left = left
        stem = left == "stem"
        self.conv_1x1 = ConvBn(in_right, filters)
        if left == "conv":
            self.conv_prev_1x1 = ConvBn(in_left, filters)
        elif left == "factorized":
            self.path_1 = _Path(in_left, filters // 2)
            self.path_2 = _Path(in_left, filters // 2)
            self.final_path_bn = nn.BatchNorm2d(filters, **_BN)
        b_chs = in_left if stem else filters
        self.comb_iter_0_left = BranchSeparables(filters, filters, 5, 2)
        self.comb_iter_0_right = BranchSeparables(b_chs, filters, 7, 2, stem_cell=stem)
        self.comb_iter_1_right = BranchSeparables(b_chs, filters, 7, 2, stem_cell=stem)
        self.comb_iter_2_right = BranchSeparables(b_chs, filters, 5, 2, stem_cell=stem)
        self.comb_iter_4_left = BranchSeparables(filters, filters, 3)

    def forward(self, x, x_prev):
        """x, x_prev: activated outputs of the previous two cells. Only separable convs read the second
        input, so it is produced activated (its ReLU fused into the conv / path ops)."""
        a = self.conv_1x1(x)
        if self.left == "conv":
            b_relu = self.conv_prev_1x1(x_prev, "relu")
        elif self.left == "factorized":
            b_relu = _factorized_reduction(self, x_prev, "relu")
        else:
            b_relu = x_prev
        a_relu = F.relu(a)
        a_max = _max_pool_s2(a)
        c0 = self.comb_iter_0_left(a_relu, self.comb_iter_0_right(b_relu))
        c1 = self.comb_iter_1_right(b_relu, a_max)
        c2 = self.comb_iter_2_right(b_relu, _avg_pool_s2(a))
        c3 = _avg_pool(c0) + c1
        c4 = self.comb_iter_4_left(F.relu(c0), a_max)
        return _relu_out(torch.cat([c1, c2, c3, c4], 1))


def cell_table(cells_per_stage, penultimate_filters, stem_filters, skip_reduction_layer_input=False):
    """The cells of a NASNet-A variant in forward order: (name, kind, in_left, in_right, filters, out_channels,
    x_prev), kind one of stem0, stem1, first (normal with factorized x_prev), normal, reduction; x_prev names
    the output the cell reads as its second input."""
    f = penultimate_filters // 24
    table = [("cell_stem_0", "stem0", stem_filters, stem_filters, f // 4, f, "conv0"),
             ("cell_stem_1", "stem1", stem_filters, f, f // 2, 2 * f, "conv0")]
    outs = {"conv0": stem_filters, "cell_stem_0": f, "cell_stem_1": 2 * f}
    prev, cur = "cell_stem_0", "cell_stem_1"
    step = max(cells_per_stage, 6)  # cell numbering as in timm / Cadene: stage s starts at cell_{6 s}
    for s in range(3):
        fs = f * 2 ** s
        if s:
            name = f"reduction_cell_{s - 1}"
            table.append((name, "reduction", outs[prev], outs[cur], fs, 4 * fs, prev))
            outs[name] = 4 * fs
            prev, cur = (prev if skip_reduction_layer_input else cur), name
        for i in range(cells_per_stage):
            name = f"cell_{s * step + i}"
            kind = "first" if i == 0 else "normal"
            table.append((name, kind, outs[prev], outs[cur], fs, 6 * fs, prev))
            outs[name] = 6 * fs
            prev, cur = cur, name
    return table


class NASNetA(nn.Module):
    def __init__(self, cells_per_stage, penultimate_filters, stem_filters, skip_reduction_layer_input=False,
                 num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        self.dropout = dropout
        self.conv0 = ConvBn(in_chans, stem_filters, 3, stride=2, padding=0)
        self.table = cell_table(cells_per_stage, penultimate_filters, stem_filters, skip_reduction_layer_input)
        for name, kind, in_left, in_right, filters, _, _ in self.table:
            if kind in ("stem0", "stem1", "reduction"):
                left = {"stem0": "stem", "stem1": "factorized", "reduction": "conv"}[kind]
                cell = ReductionCell(in_left, in_right, filters, left)
            else:
                cell = NormalCell(in_left, in_right, filters, factorized=kind == "first")
            self.add_module(name, cell)
        self.num_features = self.table[-1][5]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = Linear(self.num_features, num_classes)

    def forward_features(self, x):
        """The activated output of the last cell (timm's forward_features ends with the same ReLU)."""
        x = to_channels_last_for_inference(self, x)
        x = self.conv0(x, "relu")
        outs = {"conv0": x}  # the outputs a later cell still reads as x_prev (at most the last three)
        for name, _, *_, x_prev in self.table:  # cell_stem_0 reads conv0 as both inputs
            x = outs[name] = getattr(self, name)(x, outs[x_prev])
            if len(outs) > 3:
                del outs[next(iter(outs))]
        return x

    def forward(self, x):
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.last_linear(F.dropout(x, self.dropout, self.training))


def _nasnet(variant, weights=None, **kwargs):
    return finish(NASNetA(*_VARIANTS[variant], **kwargs), weights)


@register_model("nasnetalarge")
def nasnet_large(weights=None, **kwargs):
    """NASNet-A Large (6 @ 4032), timm's nasnetalarge layout; options num_classes, in_chans, dropout, weights."""
    return _nasnet("nasnet_large", weights, **kwargs)


@register_model("nasnetamobile")
def nasnet_mobile(weights=None, **kwargs):
    """NASNet-A Mobile (4 @ 1056), the same cells as nasnet_large (Cadene's nasnetamobile key layout); options
    num_classes, in_chans, dropout, weights."""
    return _nasnet("nasnet_mobile", weights, **kwargs)
