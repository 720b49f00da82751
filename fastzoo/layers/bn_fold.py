"""BatchNorm folded into a per-channel scale and shift, computed once per eval-mode module and
recomputed when any source tensor changes (in-place updates bump a tensor's _version; .to() and
load_state_dict(assign=True) give new storage), and cleared by training."""
import torch

from .. import _ext


def fold_bn(bn: torch.nn.BatchNorm2d, dtype=torch.float32):
    """(scale, shift) with bn(z) == z * scale + shift in eval mode, computed in float32."""
    var = bn.running_var.to(dtype)
    mean = bn.running_mean.to(dtype)
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return scale, shift


class FoldCache:
    """Caches a function of some tensors until one of them changes."""

    def __init__(self):
        self.clear()

    def clear(self):
        """Forget the cached value: batch-norm's running statistics are updated in place by the kernel
        without bumping _version, so every train-mode forward and every train() call clears."""
        self._key = None
        self._value = None

    @staticmethod
    def _key_of(tensors):
        if _ext.loaded():
            return _ext._C.version_key(tensors)
        # New storage (.to(), .half(), load_state_dict(assign=True), a reassigned parameter) moves data_ptr while
        # the old one is still alive, so (data_ptr, _version) also tells dtype and device changes apart.
        try:
            return tuple((t.data_ptr(), t._version) for t in tensors if t is not None)
        except RuntimeError:  # inference tensors have no version counter, and cannot change outside inference mode
            return tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors if t is not None)

    def get(self, tensors, compute):
        if torch.compiler.is_compiling():  # traced once; inductor constant-folds it with freezing
            return compute()
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return compute()  # differentiable fold: gradients reach the BN affine parameters too
        key = self._key_of(tensors)
        if key != self._key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value


def tensor_slots(module: torch.nn.Module, names):
    """(dict, name) pairs that find module.<name> in its _parameters or _buffers dict: a dict lookup per
    call instead of nn.Module.__getattr__, and still the current tensor after a reassignment."""
    return [(module._parameters if n in module._parameters else module._buffers, n) for n in names]


def conv_bn_slots(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d):
    """tensor_slots of every tensor fold_conv_bn reads."""
    return tensor_slots(conv, ("weight", "bias")) + tensor_slots(bn, ("weight", "bias", "running_mean", "running_var"))


def conv_kind(conv: torch.nn.Conv2d) -> str:
    """'depthwise', 'pointwise' or 'conv': which fused op runs this conv (+ BN + act) in eval mode."""
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    plain = d == (1, 1) and k[0] == k[1] and s[0] == s[1] and p[0] == p[1] and conv.padding_mode == "zeros"
    if plain and conv.groups == conv.in_channels == conv.out_channels and k[0] % 2 == 1 and s[0] in (1, 2):
        return "depthwise"
    if plain and k == (1, 1) and s == (1, 1) and p == (0, 0) and conv.groups == 1:
        return "pointwise"
    return "conv"


def fold_conv_bn(cache: FoldCache, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d):
    """(weight, scale, shift, weight * scale) of conv followed by bn, cached in `cache`; the scaled weight
    only for convs that no fused op covers (they run as one conv with the folded weight and bias)."""
    def compute():
        scale, shift = fold_bn(bn)
        if conv.bias is not None:
            shift = shift + conv.bias.float() * scale
        w = conv.weight
        scaled = w * scale.to(w.dtype).view(-1, 1, 1, 1) if conv_kind(conv) == "conv" else None
        return w, scale, shift, scaled

    return cache.get((conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var), compute)
