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


def conv_bn_act(owner: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d, x, act="relu", residual=None):
    """act(bn(conv(x)) + residual). `owner` (a module holding conv and bn) keeps the fold caches; in train
    mode they are cleared (BN's running statistics change in place)."""
    if owner.training:
        _caches(owner).clear()
        y = bn(conv(x))
        if residual is not None:
            y = y + residual
        return activations.apply(act, y)
    w, scale, shift, scaled = fold_conv_bn(_cache(owner, id(conv)), conv, bn)
    kind = conv_kind(conv)
    if kind == "depthwise" and residual is None:
        return ops.dwconv_bn_act(x, w, scale, shift, conv.stride[0], conv.padding[0], act)
    if kind == "pointwise":
        return ops.pwconv_bn_act(x, w, scale, shift, act, residual)
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
