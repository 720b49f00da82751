"""Conv + BatchNorm + activation with torchvision's Conv2dNormActivation layout (children 0: conv,
1: bn, 2: act), so torchvision state_dicts load unchanged. Eval mode runs the fused op matching the
conv's shape (depthwise or pointwise) with BN folded; other convs run one conv with folded weights.
Train mode runs the plain chain (BN needs batch statistics)."""
import torch.nn.functional as F
from torch import nn

from .. import activations, ops
from .bn_fold import FoldCache, conv_bn_slots, conv_kind, fold_conv_bn


def _act_module(act):
    if act is None or isinstance(act, nn.Module):
        return act
    return {"identity": None, "relu": nn.ReLU(inplace=True), "relu6": nn.ReLU6(inplace=True),
            "hardswish": nn.Hardswish(inplace=True), "hardsigmoid": nn.Hardsigmoid(inplace=True),
            "silu": nn.SiLU(inplace=True), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU()}[activations.check_act(
                "ConvBnAct", "act", act)]


class ConvBnAct(nn.Sequential):
    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, padding=None, groups=1, act="relu",
                 bn_eps=1e-5, bn_momentum=0.1, dilation=1):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        layers = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
                  nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum)]
        act = _act_module(act)
        if act is not None:
            layers.append(act)
        super().__init__(*layers)
        self._fold = FoldCache()

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    @property
    def act_name(self) -> str:
        return activations.name_of(self[2] if len(self) > 2 else None)

    def kind(self) -> str:
        """'depthwise', 'pointwise' or 'conv': which fused op runs this layer in eval mode."""
        return conv_kind(self.conv)

    def folded(self):
        """(weight, scale, shift, weight * scale or None) of the conv with its BN folded (eval mode)."""
        return fold_conv_bn(self._fold, self.conv, self.bn)

    def source_slots(self):
        """(dict, name) of every tensor fused_call()'s arguments are computed from."""
        return conv_bn_slots(self.conv, self.bn)

    def fused_cache(self):
        """The FoldCache that fused_call()'s arguments come from (BlockSequence checks it is unchanged)."""
        return self._fold

    def train(self, mode: bool = True):
        self._fold.clear()
        return super().train(mode)

    def forward(self, x, residual=None):
        if self.training:
            self._fold.clear()
            y = self[1](self[0](x))
            if residual is not None:
                y = y + residual
            return self[2](y) if len(self) > 2 else y
        call = self.fused_call(residual)
        if call is not None:
            return ops.run(call[0], x, *call[1])
        _, scale, shift, scaled = self.folded()
        c = self.conv
        y = F.conv2d(x, scaled, shift.to(x.dtype), c.stride, c.padding, c.dilation, c.groups)
        if residual is not None:
            y = y + residual
        return activations.apply(self.act_name, y)

    def fused_call(self, residual=None):
        """(op name, its arguments after x) of the fused op that runs this layer in eval mode, or None
        where none does (a conv with groups, dilation or even kernels runs as conv2d with the folded BN)."""
        w, scale, shift, _ = self.folded()
        kind, act, c = self.kind(), self.act_name, self.conv
        if kind == "depthwise" and residual is None:
            return "dwconv_bn_act", (w, scale, shift, c.stride[0], c.padding[0], act)
        if kind == "pointwise":
            return "pwconv_bn_act", (w, scale, shift, act, residual)
        if residual is None and self._plain_kxk():  # a KxK conv + BN + act is fused_mbconv without projection
            return "fused_mbconv", (w, scale, shift, None, None, None, c.stride[0], act, False)
        return None

    def _plain_kxk(self):
        c = self.conv
        k, s = c.kernel_size[0], c.stride[0]
        return (c.groups == 1 and c.kernel_size == (k, k) and k % 2 == 1 and c.stride == (s, s) and s in (1, 2)
                and c.padding == (k // 2, k // 2) and c.dilation == (1, 1) and c.padding_mode == "zeros")
