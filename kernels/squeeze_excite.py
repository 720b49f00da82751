"""squeeze_excite: x * gate(W2 act(W1 mean_hw(x) + b1) + b2), as three small kernels.

1. channel_sum_kernel: per-channel sums of x over pixels, (pixels x channels) tiles, a few tiles per program,
   atomically added into a zeroed fp32 (N, C) buffer (mbconv gets these sums from its dw kernel instead).
2. se_fc_kernel (twice): out[n, j] = act(in_scale * sum_i W[j, i] in[n, i] + b[j]) in fp32; the first call folds
   the 1/(H*W) of the mean into in_scale. Weights are tiny and repacked to fp32.
3. se_apply_kernel: y = x * g[n, c], tile layout as in the dw kernel (channels fastest for channels_last).
"""
import torch
import triton
import triton.language as tl

from ._utils import DTYPE_NAME, DTYPES, PTR, check_dtype, empty_like_format, is_channels_last, spec, vec32
from .tiles import pixel_channel_tile
from .activation import act_code, apply_act

CFG = {True: dict(BLOCK_P=32, BLOCK_C=64, num_warps=4), False: dict(BLOCK_P=128, BLOCK_C=16, num_warps=4)}
FC_CFG = dict(BLOCK_J=32, BLOCK_I=128, num_warps=4)
_TILES_PER_PROGRAM = 8  # pixel tiles one channel_sum program reduces before its atomic add


@triton.jit
def channel_sum_kernel(x_ptr, sum_ptr, C, HW, W, P_PER_PROG, sxn, sxc, sxh, sxw,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if CHANNELS_LAST:
        c = offs_c[None, :]
        pr = tl.arange(0, BLOCK_P)[:, None]
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    else:
        c = offs_c[:, None]
        pr = tl.arange(0, BLOCK_P)[None, :]
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    cmask = c < C
    x_base = x_ptr + n * sxn + c * sxc
    p_start = pid_p * P_PER_PROG
    p_end = tl.minimum(p_start + P_PER_PROG, HW)
    for p0 in range(p_start, p_end, BLOCK_P):
        p = p0 + pr
        m = (p < p_end) & cmask
        acc += tl.load(x_base + (p // W) * sxh + (p % W) * sxw, mask=m, other=0.0).to(tl.float32)
    if CHANNELS_LAST:
        s = tl.sum(acc, axis=0)
    else:
        s = tl.sum(acc, axis=1)
    tl.atomic_add(sum_ptr + n * C + offs_c, s, mask=offs_c < C, sem="relaxed")


@triton.jit
def se_fc_kernel(in_ptr, w_ptr, b_ptr, out_ptr, I, J, in_scale, ACT,
                 BLOCK_J: tl.constexpr, BLOCK_I: tl.constexpr):
    pid_j = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    rj = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    jmask = rj < J
    acc = tl.zeros([BLOCK_J, BLOCK_I], dtype=tl.float32)
    for i0 in range(0, I, BLOCK_I):
        ri = i0 + tl.arange(0, BLOCK_I)
        imask = ri < I
        v = tl.load(in_ptr + n * I + ri, mask=imask, other=0.0)
        wt = tl.load(w_ptr + rj[:, None] * I + ri[None, :], mask=jmask[:, None] & imask[None, :], other=0.0)
        acc += wt * v[None, :]
    z = tl.sum(acc, axis=1) * in_scale + tl.load(b_ptr + rj, mask=jmask, other=0.0)
    tl.store(out_ptr + n * J + rj, apply_act(z, ACT), mask=jmask)


@triton.jit
def se_apply_kernel(x_ptr, g_ptr, y_ptr, C, HW, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    n, p, c = pixel_channel_tile(BLOCK_P, BLOCK_C, CHANNELS_LAST)
    m = (p < HW) & (c < C)
    h = p // W
    w = p % W
    xv = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=m, other=0.0)
    g = tl.load(g_ptr + n * C + c, mask=c < C, other=0.0)
    tl.store(y_ptr + n * syn + c * syc + h * syh + w * syw, (xv.to(tl.float32) * g).to(y_ptr.dtype.element_ty),
             mask=m)


def channel_sums(x: torch.Tensor) -> torch.Tensor:
    """fp32 (N, C) sums of x over its pixels."""
    n, c, h, w = x.shape
    sums = torch.zeros((n, c), dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        return sums
    cl = is_channels_last(x)
    cfg = CFG[cl]
    hw = h * w
    per_prog = cfg["BLOCK_P"] * _TILES_PER_PROGRAM
    channel_sum_kernel[(triton.cdiv(hw, per_prog), triton.cdiv(c, cfg["BLOCK_C"]), n)](
        x, sums, c, hw, w, per_prog, *x.stride(),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, num_warps=cfg["num_warps"])
    return sums


def fc(inp32: torch.Tensor, w32: torch.Tensor, b32: torch.Tensor, in_scale: float, act: str) -> torch.Tensor:
    """act(in_scale * inp @ w.T + b): inp (N, I) fp32, w (J, I) fp32 contiguous, b (J,) fp32 -> (N, J) fp32."""
    n, i = inp32.shape
    j = w32.shape[0]
    out = torch.empty((n, j), dtype=torch.float32, device=inp32.device)
    if n == 0:
        return out
    se_fc_kernel[(triton.cdiv(j, FC_CFG["BLOCK_J"]), n)](
        inp32, w32, b32, out, i, j, float(in_scale), act_code(act),
        BLOCK_J=FC_CFG["BLOCK_J"], BLOCK_I=FC_CFG["BLOCK_I"], num_warps=FC_CFG["num_warps"])
    return out


def se_gate(sums32, hw, w1, b1, w2, b2, act, gate):
    """The fp32 (N, C) gate from fp32 (N, C) channel sums over hw pixels."""
    w1 = w1.reshape(w1.shape[0], -1).to(torch.float32).contiguous()
    w2 = w2.reshape(w2.shape[0], -1).to(torch.float32).contiguous()
    s = fc(sums32, w1, vec32(b1), 1.0 / max(hw, 1), act)
    return fc(s, w2, vec32(b2), 1.0, gate)


def apply_gate(x: torch.Tensor, g32: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    y = empty_like_format(x, (n, c, h, w))
    if y.numel() == 0:
        return y
    cl = is_channels_last(x)
    cfg = CFG[cl]
    se_apply_kernel[(triton.cdiv(h * w, cfg["BLOCK_P"]), triton.cdiv(c, cfg["BLOCK_C"]), n)](
        x, g32, y, c, h * w, w, *x.stride(), *y.stride(),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, num_warps=cfg["num_warps"])
    return y


def squeeze_excite(x, w1, b1, w2, b2, act: str = "relu", gate: str = "hardsigmoid"):
    check_dtype("squeeze_excite", x)
    n, c, h, w = x.shape
    if n == 0:
        return empty_like_format(x, (n, c, h, w))
    g = se_gate(channel_sums(x), h * w, w1, b1, w2, b2, act, gate)
    return apply_gate(x, g)


def configs():
    out = []
    for dt in DTYPES:
        for cl in (True, False):
            cfg = CFG[cl]
            tag = f"{DTYPE_NAME[dt]} {'cl' if cl else 'nchw'} P{cfg['BLOCK_P']}xC{cfg['BLOCK_C']} w{cfg['num_warps']}"
            ce = dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl)
            out.append(spec(channel_sum_kernel, dict(x_ptr=PTR[dt], sum_ptr="*fp32"), ce, cfg["num_warps"], label=tag))
            out.append(spec(se_apply_kernel, dict(x_ptr=PTR[dt], g_ptr="*fp32", y_ptr=PTR[dt]), ce, cfg["num_warps"],
                            label=tag))
    out.append(spec(se_fc_kernel, dict(in_ptr="*fp32", w_ptr="*fp32", b_ptr="*fp32", out_ptr="*fp32"),
                    dict(BLOCK_J=FC_CFG["BLOCK_J"], BLOCK_I=FC_CFG["BLOCK_I"]), FC_CFG["num_warps"],
                    scalars=dict(in_scale="fp32"),
                    label=f"fp32 J{FC_CFG['BLOCK_J']}xI{FC_CFG['BLOCK_I']} w{FC_CFG['num_warps']}"))
    return out
