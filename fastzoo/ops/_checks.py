"""Argument validation shared by the public API and the fake (meta) kernels: each error names the
argument and what was expected. Returns the output shape."""
import torch

from ..activations import check_act

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _input(op, x):
    if not isinstance(x, (torch.Tensor, _Shape)):
        raise TypeError(f"{op}: expected input x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: expected input x to be 4-D (N, C, H, W), got {x.dim()}-D of shape {tuple(x.shape)}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{op}: expected input x to be float32, float64, float16 or bfloat16, got {x.dtype}")


def _same(op, x, t, arg):
    if t.device != x.device:
        raise ValueError(f"{op}: expected {arg} on {x.device} (the device of x), got {t.device}")
    if t.dtype != x.dtype:
        raise TypeError(f"{op}: expected {arg} to have dtype {x.dtype} (the dtype of x), got {t.dtype}")


def _vec(op, x, t, arg, n):
    if t.device != x.device:
        raise ValueError(f"{op}: expected {arg} on {x.device} (the device of x), got {t.device}")
    if t.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"{op}: expected {arg} to have dtype {x.dtype} or float32, got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{op}: expected {arg} of shape ({n},), got {tuple(t.shape)}")


def _matrix(op, x, w, arg, rows, cols, rows_name, cols_name):
    """A 1x1-conv weight: (rows, cols) or (rows, cols, 1, 1)."""
    _same(op, x, w, arg)
    ok_rank = w.dim() == 2 or (w.dim() == 4 and w.shape[2] == 1 and w.shape[3] == 1)
    if not ok_rank:
        raise ValueError(f"{op}: expected {arg} of shape ({rows_name}, {cols_name}) or ({rows_name}, {cols_name}, 1, 1), "
                         f"got {tuple(w.shape)}")
    if cols is not None and w.shape[1] != cols:
        raise ValueError(f"{op}: {arg} has {w.shape[1]} input channels but expected {cols} ({cols_name}), "
                         f"shape {tuple(w.shape)}")
    if rows is not None and w.shape[0] != rows:
        raise ValueError(f"{op}: {arg} has {w.shape[0]} output channels but expected {rows} ({rows_name})")


def _stride(op, stride):
    if stride not in (1, 2):
        raise ValueError(f"{op}: expected stride 1 or 2, got {stride}")


def _out_hw(h, w, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def _kxk(op, x, w, arg, depthwise):
    _same(op, x, w, arg)
    c = x.shape[1]
    cin = 1 if depthwise else c
    if not depthwise and w.dim() == 4 and w.shape[1] != c:
        raise ValueError(f"{op}: input x has {c} channels but {arg} {tuple(w.shape)} expects {w.shape[1]}")
    if w.dim() != 4 or w.shape[1] != cin or w.shape[2] != w.shape[3]:
        want = "(C, 1, K, K)" if depthwise else "(Cout, C, K, K)"
        raise ValueError(f"{op}: expected {arg} of shape {want} with C={c}, got {tuple(w.shape)}")
    if depthwise and w.shape[0] != c:
        raise ValueError(f"{op}: {arg} has {w.shape[0]} channels but input x has {c}")
    k = w.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"{op}: expected an odd kernel size in {arg}, got {k}")
    return k


def dwconv_bn_act(x, weight, scale, shift, stride=1, padding=-1, act="identity"):
    op = "dwconv_bn_act"
    _input(op, x)
    k = _kxk(op, x, weight, "weight", True)
    c = x.shape[1]
    _vec(op, x, scale, "scale", c)
    _vec(op, x, shift, "shift", c)
    _stride(op, stride)
    check_act(op, "act", act)
    pad = k // 2 if padding < 0 else padding
    oh, ow = _out_hw(x.shape[2], x.shape[3], k, stride, pad)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{op}: input x of spatial size {tuple(x.shape[2:])} is too small for kernel {k} "
                         f"with padding {pad}")
    return (x.shape[0], c, oh, ow)


def pwconv_bn_act(x, weight, scale, shift, act="identity", residual=None):
    op = "pwconv_bn_act"
    _input(op, x)
    _matrix(op, x, weight, "weight", None, x.shape[1], "Cout", "C of x")
    cout = weight.shape[0]
    _vec(op, x, scale, "scale", cout)
    _vec(op, x, shift, "shift", cout)
    check_act(op, "act", act)
    out = (x.shape[0], cout, x.shape[2], x.shape[3])
    if residual is not None:
        _same(op, x, residual, "residual")
        if tuple(residual.shape) != out:
            raise ValueError(f"{op}: expected residual of shape {out}, got {tuple(residual.shape)}")
    return out


def squeeze_excite(x, w1, b1, w2, b2, act="relu", gate="hardsigmoid"):
    op = "squeeze_excite"
    _input(op, x)
    c = x.shape[1]
    _matrix(op, x, w1, "w1", None, c, "Cs", "C of x")
    cs = w1.shape[0]
    _vec(op, x, b1, "b1", cs)
    _matrix(op, x, w2, "w2", c, cs, "C of x", "Cs")
    _vec(op, x, b2, "b2", c)
    check_act(op, "act", act)
    check_act(op, "gate", gate)
    return tuple(x.shape)


def channel_shuffle(x, groups):
    op = "channel_shuffle"
    _input(op, x)
    if groups < 1 or x.shape[1] % groups != 0:
        raise ValueError(f"{op}: expected groups to be a positive divisor of the {x.shape[1]} channels of x, "
                         f"got groups={groups}")
    return tuple(x.shape)


class _Shape:
    """Stands for an intermediate activation of a block (x's dtype and device, another shape)."""

    def __init__(self, x, shape):
        self.shape, self.dtype, self.device = tuple(shape), x.dtype, x.device

    def dim(self):
        return len(self.shape)


def _stage(op, stage, check, *args):
    """Runs a single-op check for one stage of a block, naming the block and the stage on error."""
    try:
        return check(*args)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{op}: {stage} stage: {e}") from None


def _optional_group(op, args, names):
    present = [a is not None for a in args]
    if any(present) and not all(present):
        missing = [n for n, p in zip(names, present) if not p]
        raise ValueError(f"{op}: {', '.join(names)} must be given together; missing {', '.join(missing)}")
    return all(present)


def mbconv(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift,
           se_w1, se_b1, se_w2, se_b2, project_weight, project_scale, project_shift,
           stride=1, act="relu", se_act="relu", se_gate="hardsigmoid", residual=False):
    op = "mbconv"
    _input(op, x)
    shape = tuple(x.shape)
    if _optional_group(op, (expand_weight, expand_scale, expand_shift),
                       ("expand_weight", "expand_scale", "expand_shift")):
        shape = _stage(op, "expand (expand_*)", pwconv_bn_act, x, expand_weight, expand_scale, expand_shift, act)
    shape = _stage(op, "depthwise (dw_*)", dwconv_bn_act, _Shape(x, shape), dw_weight, dw_scale, dw_shift, stride, -1, act)
    if _optional_group(op, (se_w1, se_b1, se_w2, se_b2), ("se_w1", "se_b1", "se_w2", "se_b2")):
        _stage(op, "squeeze-excite (se_*)", squeeze_excite, _Shape(x, shape), se_w1, se_b1, se_w2, se_b2, se_act, se_gate)
    shape = _stage(op, "project (project_*)", pwconv_bn_act, _Shape(x, shape), project_weight, project_scale,
                   project_shift, "identity")
    return _residual(op, x, shape, residual)


def fused_mbconv(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale, project_shift,
                 stride=1, act="silu", residual=False):
    op = "fused_mbconv"
    _input(op, x)
    k = _kxk(op, x, conv_weight, "conv_weight", False)
    cmid = conv_weight.shape[0]
    _vec(op, x, conv_scale, "conv_scale", cmid)
    _vec(op, x, conv_shift, "conv_shift", cmid)
    _stride(op, stride)
    check_act(op, "act", act)
    oh, ow = _out_hw(x.shape[2], x.shape[3], k, stride, k // 2)
    shape = (x.shape[0], cmid, oh, ow)
    if _optional_group(op, (project_weight, project_scale, project_shift),
                       ("project_weight", "project_scale", "project_shift")):
        shape = _stage(op, "project (project_*)", pwconv_bn_act, _Shape(x, shape), project_weight, project_scale,
                       project_shift, "identity")
    return _residual(op, x, shape, residual)


def _residual(op, x, shape, residual):
    if residual and tuple(shape) != tuple(x.shape):
        raise ValueError(f"{op}: residual=True needs the output shape {tuple(shape)} to equal the input shape "
                         f"{tuple(x.shape)} (stride 1, same channels)")
    return tuple(shape)
