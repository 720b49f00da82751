"""`fastzoo bench --analytic`: for GPU planning without a GPU. Per block of a model, from its shapes alone:
the kernel launches and the DRAM/HBM bytes of the eager chain (one kernel per conv, BN, activation, SE step,
residual add, as eager PyTorch in eval mode runs them) and of fastzoo's fused path, and the time those bytes
take at a given memory bandwidth (a lower bound: a block cannot run faster than its bytes can move).

Counted: activations read and written, and weights read once per kernel. Not counted: caches (a tensor
re-read while it still sits in L2 is counted again), tiny per-channel vectors, and compute time."""
import torch
from torch import nn

from ..layers import ChannelShuffle, ConvBnAct, FusedMBConv, MBConv, SqueezeExcite


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class Step:
    """A list of kernels, each (name, bytes)."""

    def __init__(self):
        self.kernels = []

    def add(self, name, nbytes):
        self.kernels.append((name, int(nbytes)))
        return self

    @property
    def launches(self):
        return len(self.kernels)

    @property
    def bytes(self):
        return sum(b for _, b in self.kernels)


def _act_present(act):
    return act != "identity"


def conv_bn_act(cin_elems, cout_elems, weight_elems, act, residual, e):
    """Eager: conv (read x + w, write y), BN (read y, write y), act (read, write), add (read 2, write 1).
    Fused: one kernel reading x, w (and the residual), writing y."""
    eager = Step().add("conv", (cin_elems + weight_elems + cout_elems) * e).add("bn", 2 * cout_elems * e)
    if residual:
        eager.add("add", 3 * cout_elems * e)
    if _act_present(act):
        eager.add("act", 2 * cout_elems * e)
    fused = Step().add("conv_bn_act", (cin_elems + weight_elems + cout_elems + (cout_elems if residual else 0)) * e)
    return eager, fused


def squeeze_excite(elems, c, cs, n, e):
    """Eager: mean (read x), fc1, act, fc2, gate (tiny), multiply (read x, write y). Fused: read x twice, write once."""
    small = n * (c + cs) * e
    eager = Step().add("mean", elems * e + n * c * e).add("fc1", small + c * cs * e).add("act", 2 * n * cs * e)
    eager.add("fc2", small + c * cs * e).add("gate", 2 * n * c * e).add("mul", 2 * elems * e)
    fused = Step().add("se_reduce", elems * e).add("se_fc", 2 * c * cs * e).add("se_apply", 2 * elems * e)
    return eager, fused


def mbconv(block: MBConv, x_shape, out_shape, e):
    n, cin, h, w = x_shape
    _, cout, ho, wo = out_shape
    stages = block._stages
    exp_c = stages[0][0].out_channels if block.has_expand else cin
    k = stages[1 if block.has_expand else 0][0].kernel_size[0]
    x_el, h1_el, h2_el, y_el = n * cin * h * w, n * exp_c * h * w, n * exp_c * ho * wo, _numel(out_shape)
    eager = Step()
    if block.has_expand:
        eg, _ = conv_bn_act(x_el, h1_el, exp_c * cin, block.act, False, e)
        eager.kernels += eg.kernels
    eg, _ = conv_bn_act(h1_el, h2_el, exp_c * k * k, block.act, False, e)
    eager.kernels += eg.kernels
    if block.se is not None:
        eg, _ = squeeze_excite(h2_el, exp_c, block.se.fc1.out_channels, n, e)
        eager.kernels += eg.kernels
    eg, _ = conv_bn_act(h2_el, y_el, cout * exp_c, "identity", block.use_res_connect, e)
    eager.kernels += eg.kernels
    # Fused (the GPU plan): expand GEMM+epilogue -> dw (+SE sums) -> SE FCs -> project GEMM (gate prologue,
    # residual epilogue).
    fused = Step()
    if block.has_expand:
        fused.add("expand", (x_el + exp_c * cin + h1_el) * e)
    fused.add("dw", (h1_el + exp_c * k * k + h2_el) * e)
    if block.se is not None:
        fused.add("se_fc", 2 * exp_c * block.se.fc1.out_channels * e)
    fused.add("project", (h2_el + cout * exp_c + y_el + (x_el if block.use_res_connect else 0)) * e)
    return eager, fused


def fused_mbconv(block: FusedMBConv, x_shape, out_shape, e):
    n, cin, h, w = x_shape
    conv = block._stages[0][0]
    mid = conv.out_channels
    ho, wo = out_shape[2], out_shape[3]
    x_el, mid_el, y_el = n * cin * h * w, n * mid * ho * wo, _numel(out_shape)
    has_proj = block.has_project
    eager, fused = conv_bn_act(x_el, mid_el, conv.weight.numel(), block.act, block.use_res_connect and not has_proj, e)
    if has_proj:
        eg, fu = conv_bn_act(mid_el, y_el, block._stages[1][0].weight.numel(), "identity", block.use_res_connect, e)
        eager.kernels += eg.kernels
        fused.kernels += fu.kernels
    return eager, fused


def analyze(model: nn.Module, x: torch.Tensor):
    """One row per fused block: name, kind, eager (launches, bytes), fused (launches, bytes)."""
    rows = []
    handles = []
    e = x.element_size()

    def hook(name):
        def fn(mod, inputs, output):
            xs, ys = tuple(inputs[0].shape), tuple(output.shape)
            if isinstance(mod, MBConv):
                eg, fu = mbconv(mod, xs, ys, e)
            elif isinstance(mod, FusedMBConv):
                eg, fu = fused_mbconv(mod, xs, ys, e)
            elif isinstance(mod, ConvBnAct):
                eg, fu = conv_bn_act(_numel(xs), _numel(ys), mod.conv.weight.numel(), mod.act_name, False, e)
            elif isinstance(mod, SqueezeExcite):
                eg, fu = squeeze_excite(_numel(xs), xs[1], mod.fc1.out_channels, xs[0], e)
            elif isinstance(mod, ChannelShuffle):
                eg = Step().add("view+transpose+contiguous", 2 * _numel(xs) * e)
                fu = Step().add("channel_shuffle", 2 * _numel(xs) * e)
            else:
                return
            rows.append({"block": name, "kind": type(mod).__name__, "in": xs, "out": ys,
                         "eager_launches": eg.launches, "eager_bytes": eg.bytes,
                         "fused_launches": fu.launches, "fused_bytes": fu.bytes})
        return fn

    def register(mod, prefix):
        for name, child in mod.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (MBConv, FusedMBConv, ConvBnAct, SqueezeExcite, ChannelShuffle)):
                handles.append(child.register_forward_hook(hook(full)))  # outermost fused unit only
            else:
                register(child, full)

    register(model, "")
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def totals(rows, hbm_gbps, launch_us=3.0):
    """Sum over the blocks, and the bandwidth-bound time (plus a per-launch cost) of each path."""
    out = {}
    for path in ("eager", "fused"):
        b = sum(r[f"{path}_bytes"] for r in rows)
        n = sum(r[f"{path}_launches"] for r in rows)
        out[path] = {"launches": n, "bytes": b, "hbm_ms": b / (hbm_gbps * 1e9) * 1e3,
                     "with_launch_ms": b / (hbm_gbps * 1e9) * 1e3 + n * launch_us / 1e3}
    return out
