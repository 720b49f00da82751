"""The inverted-residual blocks. Eval mode runs the whole block as one fused op (mbconv / fused_mbconv)
with BN folded; train mode runs the children in order (BN needs batch statistics).

The children follow the layout of the library whose checkpoints the block must load unchanged:
- "block" (torchvision MobileNetV3 / EfficientNet): block = [ConvBnAct expand?, ConvBnAct dw, SE?, ConvBnAct project]
- "conv" (torchvision MobileNetV2): conv = [ConvBnAct expand?, ConvBnAct dw, Conv2d project, BatchNorm2d]
- "layers" (torchvision MnasNet): layers = [Conv2d, BN, act, Conv2d dw, BN, act, Conv2d, BN]
"""
from typing import Optional

import torch
from torch import nn

from .. import activations, ops
from .bn_fold import FoldCache, conv_bn_slots, fold_conv_bn, tensor_slots
from .conv_bn_act import ConvBnAct, _act_module
from .squeeze_excite import SqueezeExcite

LAYOUTS = ("block", "conv", "layers")


def drop_path(x, p: float, training: bool):
    """Stochastic depth per sample (torchvision's stochastic_depth, mode="row")."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * (mask.div_(keep) if keep > 0 else mask)  # p = 1 drops every sample


def _conv_bn(cin, cout, k, stride, groups, act, bn, layout):
    """A conv + BN (+ act) stage as modules of `layout`, and the (conv, bn) pair the fused path folds."""
    act_mod = _act_module(act)
    if layout == "block" or (layout == "conv" and act is not None):
        cba = ConvBnAct(cin, cout, k, stride, groups=groups, act=act_mod, **bn)
        return [cba], (cba.conv, cba.bn)
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    norm = nn.BatchNorm2d(cout, eps=bn["bn_eps"], momentum=bn["bn_momentum"])
    return [conv, norm] + ([act_mod] if act_mod is not None else []), (conv, norm)


class _Block(nn.Module):
    """Shared by MBConv and FusedMBConv: the container, the folded stages, residual and drop path."""

    def _setup(self, layout, modules, stages, stride, act, in_chs, out_chs, drop_path_rate):
        if layout not in LAYOUTS:
            raise ValueError(f"{type(self).__name__}: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        self.layout = layout
        setattr(self, layout, nn.Sequential(*modules))
        self._stages = stages  # (conv, bn) pairs, also registered inside the container
        self._folds = [FoldCache() for _ in stages]
        self._args = FoldCache()  # the fused op's whole argument list, rebuilt when any source changes
        self.stride, self.act = stride, activations.check_act(type(self).__name__, "act", act)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.drop_path_rate = drop_path_rate

    def folded(self, i):
        return fold_conv_bn(self._folds[i], *self._stages[i])[:3]

    def _source_slots(self):
        """(dict, name) of every tensor the fused op's arguments are computed from."""
        slots = []
        for conv, bn in self._stages:
            slots += conv_bn_slots(conv, bn)
        return slots

    def source_slots(self):
        """(dict, name) of every tensor the fused op's arguments are computed from, found once. Read through
        the modules' own _parameters / _buffers dicts: nn.Module.__getattr__ made this ~17 us per block and call."""
        slots = self.__dict__.get("_slots")
        if slots is None:
            slots = self.__dict__["_slots"] = self._source_slots()
        return slots

    def fused_cache(self):
        """The FoldCache that fused_call()'s arguments come from (BlockSequence checks it is unchanged)."""
        return self._args

    def op_args(self):
        """The fused op's arguments after x, cached: one key check per call instead of one per stage."""
        return self._args.get([d[n] for d, n in self.source_slots()], self.compute_op_args)

    def fused_call(self):
        """(op name, its arguments after x) of the fused op that runs this block in eval mode."""
        return self.OP, self.op_args()

    def forward_fused(self, x):
        op, args = self.fused_call()
        return ops.run(op, x, *args)

    def clear(self):
        for f in self._folds + [self._args]:
            f.clear()

    def train(self, mode: bool = True):
        self.clear()
        return super().train(mode)

    def forward(self, x):
        if self.training:
            self.clear()
            y = getattr(self, self.layout)(x)
            return x + drop_path(y, self.drop_path_rate, True) if self.use_res_connect else y
        return self.forward_fused(x)


class MBConv(_Block):
    OP = "mbconv"

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, expand_chs=None, se_chs: Optional[int] = None,
                 act="relu", se_act="relu", se_gate="hardsigmoid", drop_path_rate=0.0, bn_eps=1e-5, bn_momentum=0.1,
                 layout="block"):
        super().__init__()
        expand_chs = expand_chs or in_chs
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        modules, stages = [], []
        self.has_expand = expand_chs != in_chs
        if self.has_expand:
            mods, pair = _conv_bn(in_chs, expand_chs, 1, 1, 1, act, bn, layout)
            modules += mods
            stages.append(pair)
        mods, pair = _conv_bn(expand_chs, expand_chs, kernel_size, stride, expand_chs, act, bn, layout)
        modules += mods
        stages.append(pair)
        self.se = None
        if se_chs is not None:
            se = SqueezeExcite(expand_chs, se_chs, se_act, se_gate)
            modules.append(se)
            object.__setattr__(self, "se", se)  # registered once, inside the container
        mods, pair = _conv_bn(expand_chs, out_chs, 1, 1, 1, None, bn, layout)
        modules += mods
        stages.append(pair)
        self._setup(layout, modules, stages, stride, act, in_chs, out_chs, drop_path_rate)

    def _source_slots(self):
        se = self.se
        if se is None:
            return super()._source_slots()
        fc = ("weight", "bias")
        return super()._source_slots() + tensor_slots(se.fc1, fc) + tensor_slots(se.fc2, fc)

    def compute_op_args(self):
        expand = self.folded(0) if self.has_expand else (None, None, None)
        dw = self.folded(1 if self.has_expand else 0)
        project = self.folded(len(self._stages) - 1)
        se = self.se
        se_args = (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias) if se is not None else (None,) * 4
        return (*expand, *dw, *se_args, *project, self.stride, self.act, se.act if se is not None else "relu",
                se.gate if se is not None else "hardsigmoid", self.use_res_connect)



class FusedMBConv(_Block):
    OP = "fused_mbconv"

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, expand_chs=None, act="silu", drop_path_rate=0.0,
                 bn_eps=1e-5, bn_momentum=0.1, layout="block"):
        super().__init__()
        expand_chs = expand_chs or in_chs
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.has_project = expand_chs != in_chs
        mods, pair = _conv_bn(in_chs, expand_chs if self.has_project else out_chs, kernel_size, stride, 1, act, bn,
                              layout)
        modules, stages = list(mods), [pair]
        if self.has_project:
            mods, pair = _conv_bn(expand_chs, out_chs, 1, 1, 1, None, bn, layout)
            modules += mods
            stages.append(pair)
        self._setup(layout, modules, stages, stride, act, in_chs, out_chs, drop_path_rate)

    def compute_op_args(self):
        project = self.folded(1) if self.has_project else (None, None, None)
        return (*self.folded(0), *project, self.stride, self.act, self.use_res_connect)


