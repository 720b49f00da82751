"""nn.Linear (same parameters, so checkpoints load unchanged) whose float32 CPU inference runs as the
fused pointwise op on (N, C, 1, 1) rows, as ConvBnAct's eval mode runs its fused op (autograd included).

At batch 1 a classifier is a matrix-vector product bound by streaming its weights (mobilenet_v3_small's
two: 6.4 MB). torch's call into MKL's sgemv runs on one thread; fastzoo's kernel splits the rows over the
threads (csrc/cpu/gemm.cpp). Training, autocast, compilation and other devices keep nn.Linear."""
import torch
import torch.nn.functional as F
from torch import nn

from .. import backends, ops

_consts = {}  # (value, n) -> the float32 vector the op takes as its scale (ones) or missing bias (zeros)


def _const(value, n):
    t = _consts.get((value, n))
    if t is None:
        with torch.inference_mode(False):  # a normal tensor: autograd may save it later, inference tensors not
            t = _consts[(value, n)] = torch.full((n,), value, dtype=torch.float32)
    return t


class Linear(nn.Linear):
    def forward(self, x):
        if (self.training or x.dim() != 2 or x.dtype != torch.float32 or x.device.type != "cpu"
                or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")
                or self.weight.dtype != torch.float32 or not backends.cpu_kernels_in_use()):
            return F.linear(x, self.weight, self.bias)
        n, c = x.shape
        shift = self.bias if self.bias is not None else _const(0.0, self.out_features)
        y = ops.run("pwconv_bn_act", x.view(n, c, 1, 1) if x.stride(1) == 1 else x.contiguous().view(n, c, 1, 1),
                    self.weight, _const(1.0, self.out_features), shift, "identity", None)
        return y.view(n, self.out_features)
