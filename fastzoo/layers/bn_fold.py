"""BatchNorm folded into a per-channel scale and shift, computed once per eval-mode module and
recomputed when any source tensor changes (in-place updates bump a tensor's _version; .to() and
load_state_dict(assign=True) give new storage), and cleared by training."""
import torch


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
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors if t is not None)

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
