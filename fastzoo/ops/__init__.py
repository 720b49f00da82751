"""The fused operators: fastzoo.ops.<op>(...) validates its arguments and runs the chosen backend
(see fastzoo.backend). The same ops are torch.ops.fastzoo.<op> (C++/CUDA) and
torch.ops.fastzoo_triton.<op> (Triton); docs/OPS.md has the contract."""
import torch

from .. import _ext, backends, reference
from ..memory_format import suggest_memory_format
from . import _autograd, _checks, _triton

OP_NAMES = ("dwconv_bn_act", "pwconv_bn_act", "squeeze_excite", "channel_shuffle", "mbconv", "fused_mbconv")


def _fake(check):
    def fake(x, *args):
        shape = check(x, *args)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))
    return fake


def _register():
    for name in OP_NAMES:
        bwd, setup = _autograd.FORMULAS[name]
        fake = _fake(getattr(_checks, name))
        _triton.OPS[name].register_fake(fake)
        _triton.OPS[name].register_autograd(bwd, setup_context=setup)
        if _ext.loaded():
            torch.library.register_fake(f"fastzoo::{name}", fake)
            torch.library.register_autograd(f"fastzoo::{name}", bwd, setup_context=setup)


_register()


def implementation(name: str, device_type: str):
    """The callable that runs op `name` on tensors of `device_type` with the current backend."""
    chosen = backends.resolve(device_type)
    if chosen == "reference":
        return getattr(reference, name)
    if chosen == "triton":
        return _triton.OPS[name]
    return getattr(torch.ops.fastzoo, name)


_CPP_BACKENDS = ("cpu", "cuda")
_CPP_OPS = {}  # name -> torch.ops.fastzoo.<name>.default (the attribute lookups cost ~1 us per call)
_DISPATCHED = {name: getattr(_ext._C.ops, name) for name in OP_NAMES} if _ext.loaded() else {}
# module globals: each attribute lookup through torch's large namespaces costs in a cold call
_any_autocast, _has_torch_function, _is_compiling = (torch._C._is_any_autocast_enabled, torch._C._has_torch_function,
                                                     torch.compiler.is_compiling)


def _cpp_op(name):
    op = _CPP_OPS.get(name)
    if op is None:
        op = _CPP_OPS[name] = getattr(torch.ops.fastzoo, name).default
    return op


def _autocast(x, args):
    """Under autocast, the fused ops run in its dtype (as conv does): x and the weights are cast; the
    per-channel vectors stay float32, which every op takes (docs/OPS.md)."""
    dt = torch.get_autocast_dtype(x.device.type)
    cast = lambda t: t.to(dt) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 1 else t  # noqa: E731
    return cast(x), tuple(cast(a) for a in args)


def _call(name, x, args):
    device_type = "cpu" if x.is_cpu else x.device.type  # x.device builds a torch.device: ~0.4 us
    if _any_autocast() and torch.is_autocast_enabled(device_type):
        x, args = _autocast(x, args)
    if backends.resolve(device_type) in _CPP_BACKENDS:
        # fastzoo._C.ops.<name> calls the op through the C++ dispatcher: the same dispatch (autograd, tracing,
        # dispatch modes) as torch.ops.fastzoo.<name>, ~4 us a call less than torch.ops' Python path at batch 1.
        # torch.ops itself where dynamo traces the call (it graphs torch.ops) and where an argument overrides
        # __torch_function__ (torch.ops hands those over).
        if _is_compiling() or _has_torch_function((x, *args)):
            op = _cpp_op(name)
        else:
            op = _DISPATCHED[name]
        # The C++ ops check every argument themselves (TORCH_CHECK, same wording), so the Python checks
        # (~7 us, which matters at batch 1) run only when the op refused its arguments: they raise the
        # ValueError / TypeError that names the argument; anything they accept is re-raised as it was.
        try:
            return op(x, *args)
        except RuntimeError:
            getattr(_checks, name)(x, *args)
            raise
    getattr(_checks, name)(x, *args)
    return implementation(name, device_type)(x, *args)


def run(name: str, x, *args):
    """What the fastzoo layers call: op `name` on the current backend, positional arguments as the schema's."""
    return _call(name, x, args)


def dwconv_bn_act(x, weight, scale, shift, stride=1, padding=-1, act="identity"):
    """act(depthwise KxK conv(x, weight) * scale + shift); padding -1 means K//2."""
    return _call("dwconv_bn_act", x, (weight, scale, shift, stride, padding, act))


def pwconv_bn_act(x, weight, scale, shift, act="identity", residual=None):
    """act(1x1 conv(x, weight) * scale + shift + residual)."""
    return _call("pwconv_bn_act", x, (weight, scale, shift, act, residual))


def squeeze_excite(x, w1, b1, w2, b2, act="relu", gate="hardsigmoid"):
    """x * gate(w2 @ act(w1 @ mean_hw(x) + b1) + b2)."""
    return _call("squeeze_excite", x, (w1, b1, w2, b2, act, gate))


def channel_shuffle(x, groups):
    """The ShuffleNet channel shuffle: (N, g, C/g, H, W) -> (N, C/g, g, H, W)."""
    return _call("channel_shuffle", x, (groups,))


def mbconv(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift,
           se_w1, se_b1, se_w2, se_b2, project_weight, project_scale, project_shift,
           stride=1, act="relu", se_act="relu", se_gate="hardsigmoid", residual=False):
    """The inverted-residual block: expand pw + BN + act, dw + BN + act, SE, project pw + BN, + x."""
    return _call("mbconv", x, (expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift, se_w1, se_b1,
                               se_w2, se_b2, project_weight, project_scale, project_shift, stride, act, se_act,
                               se_gate, residual))


def fused_mbconv(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale, project_shift,
                 stride=1, act="silu", residual=False):
    """The Fused-MBConv block: KxK conv + BN + act, optional project pw + BN, + x."""
    return _call("fused_mbconv", x, (conv_weight, conv_scale, conv_shift, project_weight, project_scale,
                                     project_shift, stride, act, residual))
