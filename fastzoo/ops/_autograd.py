"""Backward formulas of every fastzoo op, in plain aten ops (so torch.compile can trace them), shared by
the C++ ops (fastzoo::) and the Triton ops (fastzoo_triton::). Intermediates are recomputed from the
saved inputs with the reference math rather than stored: the forward stays one fused kernel."""
import torch
import torch.nn.functional as F

from .. import activations, reference


def _vec(t, like):
    return t.to(like.dtype).view(1, -1, 1, 1)


def _bn_act_bwd(x, w4, w, c, scale, shift, stride, pad, groups, act, gy, residual):
    z = c * _vec(scale, c) + _vec(shift, c)
    if residual is not None:
        z = z + residual
    gz = activations.grad(act, z, gy)
    g_scale = (gz * c).sum((0, 2, 3)).to(scale.dtype)
    g_shift = gz.sum((0, 2, 3)).to(shift.dtype)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        gz * _vec(scale, gz), x, w4, None, [stride, stride], [pad, pad], [1, 1], False, [0, 0], groups,
        [True, True, False])
    return gx, gw.reshape(w.shape), g_scale, g_shift, gz


def dwconv_bwd(x, w, scale, shift, stride, padding, act, gy):
    k = w.shape[-1]
    pad = k // 2 if padding < 0 else padding
    c = F.conv2d(x, w, None, stride, pad, 1, x.shape[1])
    return _bn_act_bwd(x, w, w, c, scale, shift, stride, pad, x.shape[1], act, gy, None)[:4]


def pwconv_bwd(x, w, scale, shift, act, residual, gy):
    """-> gx, gw, g_scale, g_shift, g_residual (None without residual)."""
    w4 = w if w.dim() == 4 else w.reshape(w.shape[0], w.shape[1], 1, 1)
    c = F.conv2d(x, w4)
    gx, gw, gs, gb, gz = _bn_act_bwd(x, w4, w, c, scale, shift, 1, 0, 1, act, gy, residual)
    return gx, gw, gs, gb, (gz if residual is not None else None)


def se_bwd(x, w1, b1, w2, b2, act, gate, gy):
    n, ch = x.shape[:2]
    m = x.mean((2, 3))                                      # (N, C)
    u1 = F.linear(m, w1.reshape(w1.shape[0], -1), b1.to(x.dtype))
    a1 = activations.apply(act, u1)
    u2 = F.linear(a1, w2.reshape(w2.shape[0], -1), b2.to(x.dtype))
    g = activations.apply(gate, u2)
    gx = gy * g.view(n, ch, 1, 1)
    gg = (gy * x).sum((2, 3))
    gu2 = activations.grad(gate, u2, gg)
    gw2 = (gu2.t() @ a1).reshape(w2.shape)
    ga1 = gu2 @ w2.reshape(w2.shape[0], -1)
    gu1 = activations.grad(act, u1, ga1)
    gw1 = (gu1.t() @ m).reshape(w1.shape)
    gm = gu1 @ w1.reshape(w1.shape[0], -1)
    gx = gx + (gm / (x.shape[2] * x.shape[3])).view(n, ch, 1, 1)
    return gx, gw1, gu1.sum(0).to(b1.dtype), gw2, gu2.sum(0).to(b2.dtype)


def mbconv_bwd(inputs, stride, act, se_act, se_gate, residual, gy):
    (x, ew, es, eb, dw, ds, db, s1w, s1b, s2w, s2b, pw, ps, pb) = inputs
    h1 = reference.pwconv_bn_act(x, ew, es, eb, act) if ew is not None else x
    h2 = reference.dwconv_bn_act(h1, dw, ds, db, stride, -1, act)
    h3 = reference.squeeze_excite(h2, s1w, s1b, s2w, s2b, se_act, se_gate) if s1w is not None else h2
    g3, gpw, gps, gpb, _ = pwconv_bwd(h3, pw, ps, pb, "identity", None, gy)
    se_grads = (None,) * 4
    if s1w is not None:
        g3, *se_grads = se_bwd(h2, s1w, s1b, s2w, s2b, se_act, se_gate, g3)
    g1, gdw, gds, gdb = dwconv_bwd(h1, dw, ds, db, stride, -1, act, g3)
    exp_grads = (None,) * 3
    if ew is not None:
        g1, *exp_grads = pwconv_bwd(x, ew, es, eb, act, None, g1)[:4]
    gx = g1 + gy if residual else g1
    return (gx, *exp_grads, gdw, gds, gdb, *se_grads, gpw, gps, gpb)


def fused_mbconv_bwd(inputs, stride, act, residual, gy):
    (x, cw, cs, cb, pw, ps, pb) = inputs
    k = cw.shape[-1]
    c = F.conv2d(x, cw, None, stride, k // 2)
    proj_grads = (None,) * 3
    gh = gy
    if pw is not None:
        h = activations.apply(act, c * _vec(cs, c) + _vec(cb, c))
        gh, *proj_grads = pwconv_bwd(h, pw, ps, pb, "identity", None, gy)[:4]
    gx, gcw, gcs, gcb, _ = _bn_act_bwd(x, cw, cw, c, cs, cb, stride, k // 2, 1, act, gh, None)
    if residual:
        gx = gx + gy
    return (gx, gcw, gcs, gcb, *proj_grads)


# --- torch.library glue: setup_context saves the inputs, backward returns one grad per input ---

def _save_all(ctx, inputs, output, n_tensors, attrs):
    ctx.save_for_backward(*inputs[:n_tensors])  # optional tensors come back as None
    for name, value in zip(attrs, inputs[n_tensors:]):
        setattr(ctx, name, value)


def _setup_dw(ctx, inputs, output):
    _save_all(ctx, inputs, output, 4, ("stride", "padding", "act"))


def _bwd_dw(ctx, gy):
    return (*dwconv_bwd(*ctx.saved_tensors, ctx.stride, ctx.padding, ctx.act, gy), None, None, None)


def _setup_pw(ctx, inputs, output):
    x, w, s, b, act, res = inputs
    ctx.save_for_backward(x, w, s, b, res)
    ctx.act = act


def _bwd_pw(ctx, gy):
    x, w, s, b, res = ctx.saved_tensors
    gx, gw, gs, gb, gr = pwconv_bwd(x, w, s, b, ctx.act, res, gy)
    return gx, gw, gs, gb, None, gr


def _setup_se(ctx, inputs, output):
    _save_all(ctx, inputs, output, 5, ("act", "gate"))


def _bwd_se(ctx, gy):
    return (*se_bwd(*ctx.saved_tensors, ctx.act, ctx.gate, gy), None, None)


def _setup_shuffle(ctx, inputs, output):
    ctx.groups = inputs[1]


def _bwd_shuffle(ctx, gy):
    # The inverse of a shuffle with g groups is a shuffle with C/g groups.
    return reference.channel_shuffle(gy, gy.shape[1] // ctx.groups), None


def _setup_mb(ctx, inputs, output):
    _save_all(ctx, inputs, output, 14, ("stride", "act", "se_act", "se_gate", "residual"))


def _bwd_mb(ctx, gy):
    return (*mbconv_bwd(ctx.saved_tensors, ctx.stride, ctx.act, ctx.se_act, ctx.se_gate, ctx.residual, gy),
            None, None, None, None, None)


def _setup_fmb(ctx, inputs, output):
    _save_all(ctx, inputs, output, 7, ("stride", "act", "residual"))


def _bwd_fmb(ctx, gy):
    return (*fused_mbconv_bwd(ctx.saved_tensors, ctx.stride, ctx.act, ctx.residual, gy), None, None, None)


FORMULAS = {
    "dwconv_bn_act": (_bwd_dw, _setup_dw),
    "pwconv_bn_act": (_bwd_pw, _setup_pw),
    "squeeze_excite": (_bwd_se, _setup_se),
    "channel_shuffle": (_bwd_shuffle, _setup_shuffle),
    "mbconv": (_bwd_mb, _setup_mb),
    "fused_mbconv": (_bwd_fmb, _setup_fmb),
}
