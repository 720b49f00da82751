"""Fused conv + BN + act over plain nn.Conv2d / nn.BatchNorm2d attributes, for families whose torchvision
layout names them separately (conv1 / bn1, Sequential(conv, bn) downsample, DenseNet's BN-before-conv):
the state_dict keys stay torchvision's, eval mode folds the pair and runs the fused op that fits the conv
(pwconv_bn_act for 1x1 stride-1 convs, dwconv_bn_act for depthwise ones, one conv with folded weights
otherwise), train mode runs the plain chain."""
import torch
import torch.nn.functional as F
from torch import nn

from .. import activations, ops
from ..layers.bn_fold import FoldCache, conv_kind, fold_bn, fold_conv_bn


def _caches(owner):
    caches = owner.__dict__.get("_fz_folds")
    if caches is None:
        caches = owner.__dict__["_fz_folds"] = {}
    return caches


def _cache(owner, key):
    caches = _caches(owner)
    cache = caches.get(key)
    if cache is None:
        cache = caches[key] = FoldCache()
    return cache


def _fold_conv_bias(cache, conv):
    """A conv with bias and no BN as (weight, ones, bias, weight): the fused ops' scale and shift."""
    def compute():
        w = conv.weight
        ones = torch.ones(w.shape[0], dtype=torch.float32, device=w.device)
        shift = conv.bias.float() if conv.bias is not None else torch.zeros_like(ones)
        return w, ones, shift, w
    return cache.get((conv.weight, conv.bias), compute)


def conv_bn_act(owner: nn.Module, conv: nn.Conv2d, bn, x, act="relu", residual=None):
    """act(bn(conv(x)) + residual); bn may be None (a conv with bias, VGG / SqueezeNet). `owner` (a module
    holding conv and bn) keeps the fold caches; in train mode they are cleared (BN's running statistics
    change in place)."""
    if owner.training:
        _caches(owner).clear()
        y = conv(x) if bn is None else bn(conv(x))
        if residual is not None:
            y = y + residual
        return activations.apply(act, y)
    cache = _cache(owner, id(conv))
    w, scale, shift, scaled = _fold_conv_bias(cache, conv) if bn is None else fold_conv_bn(cache, conv, bn)
    kind = conv_kind(conv)
    if kind == "depthwise" and residual is None:
        return ops.run("dwconv_bn_act", x, w, scale, shift, conv.stride[0], conv.padding[0], act)
    if kind == "pointwise":
        return ops.run("pwconv_bn_act", x, w, scale, shift, act, residual)
    y = F.conv2d(x, scaled, shift.to(x.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return activations.apply(act, y)


def bn_act(owner: nn.Module, bn: nn.BatchNorm2d, x, act="relu"):
    """act(bn(x)) with the BN folded into one multiply-add in eval mode (pre-activation BN, DenseNet)."""
    if owner.training:
        _caches(owner).clear()
        return activations.apply(act, bn(x))
    scale, shift = _cache(owner, id(bn)).get((bn.weight, bn.bias, bn.running_mean, bn.running_var),
                                             lambda: fold_bn(bn))
    return activations.apply(act, torch.addcmul(shift.to(x.dtype).view(1, -1, 1, 1), x,
                                                scale.to(x.dtype).view(1, -1, 1, 1)))


_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.GELU)


class FusedSequential(nn.Sequential):
    """nn.Sequential (same children, same state_dict keys) whose eval-mode forward runs each run of
    Conv2d [, BatchNorm2d] [, activation] children as one conv_bn_act, and a BatchNorm2d [, activation]
    not preceded by a conv as one folded multiply-add (+ act)."""

    def forward(self, x):
        if self.training:
            _caches(self).clear()
            return super().forward(x)
        mods = list(self)
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            if type(m) is nn.Conv2d:
                j = i + 1
                bn = mods[j] if j < n and type(mods[j]) is nn.BatchNorm2d else None
                j += bn is not None
                act = mods[j] if j < n and type(mods[j]) in _ACTS else None
                j += act is not None
                x = conv_bn_act(self, m, bn, x, activations.name_of(act))
                i = j
            elif type(m) is nn.BatchNorm2d:
                act = mods[i + 1] if i + 1 < n and type(mods[i + 1]) in _ACTS else None
                x = bn_act(self, m, x, activations.name_of(act))
                i += 1 + (act is not None)
            else:
                x = m(x)
                i += 1
        return x
