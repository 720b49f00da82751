"""dwconv_bn_act: depthwise KxK conv + folded BN (per-channel scale/shift) + activation.

One program computes a tile of (pixels x channels) of one sample. For channels_last the tile is laid out
[BLOCK_P, BLOCK_C] with channels fastest (vectorized, coalesced loads over C); for NCHW it is [BLOCK_C, BLOCK_P]
with pixels fastest. K, stride, padding and the activation are runtime ints (one binary for K 3/5/7, stride 1/2 and
all activations). Optionally (WITH_SUM, used by mbconv) the program also reduces its output tile over pixels and
atomically adds the per-channel sums into an fp32 (N, C) buffer: the squeeze-excite mean without another pass.
"""
import torch
import triton
import triton.language as tl

from ._utils import DTYPE_NAME, DTYPES, PTR, check_dtype, empty_like_format, is_channels_last, spec, vec32
from .activation import act_code, apply_act

# (BLOCK_P, BLOCK_C, num_warps) per layout
CFG = {True: dict(BLOCK_P=32, BLOCK_C=32, num_warps=4), False: dict(BLOCK_P=128, BLOCK_C=8, num_warps=8)}


@triton.jit
def dwconv_bn_act_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, y_ptr, sum_ptr,
                         C, H, W, HO, WO,
                         sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                         K, STRIDE, PAD, ACT,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                         CHANNELS_LAST: tl.constexpr, WITH_SUM: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if CHANNELS_LAST:
        p = offs_p[:, None]
        c = offs_c[None, :]
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    else:
        p = offs_p[None, :]
        c = offs_c[:, None]
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    pmask = p < HO * WO
    cmask = c < C
    oh = p // WO
    ow = p % WO
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    x_base = x_ptr + n * sxn + c * sxc
    for kh in range(0, K):
        ih = ih0 + kh
        hmask = pmask & (ih >= 0) & (ih < H) & cmask
        x_row = x_base + ih * sxh
        for kw in range(0, K):
            iw = iw0 + kw
            m = hmask & (iw >= 0) & (iw < W)
            xv = tl.load(x_row + iw * sxw, mask=m, other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + (kh * K + kw) * C + c, mask=cmask, other=0.0)
            acc += xv * wv
    sc = tl.load(scale_ptr + c, mask=cmask, other=0.0)
    sh = tl.load(shift_ptr + c, mask=cmask, other=0.0)
    y = apply_act(acc * sc + sh, ACT).to(y_ptr.dtype.element_ty)
    omask = pmask & cmask
    tl.store(y_ptr + n * syn + c * syc + oh * syh + ow * syw, y, mask=omask)
    if WITH_SUM:
        ys = tl.where(omask, y.to(tl.float32), 0.0)
        if CHANNELS_LAST:
            s = tl.sum(ys, axis=0)
        else:
            s = tl.sum(ys, axis=1)
        tl.atomic_add(sum_ptr + n * C + offs_c, s, mask=offs_c < C, sem="relaxed")


def prepare_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C,1,K,K) -> (K*K, C) float32 contiguous: one coalesced channel vector per tap."""
    c, k = weight.shape[0], weight.shape[-1]
    return weight.reshape(c, k * k).t().to(torch.float32).contiguous()


def _launch(x, wt, k, scale32, shift32, stride, pad, act, sums=None, out=None):
    n, c, h, w = x.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    y = out if out is not None else empty_like_format(x, (n, c, ho, wo))
    if n == 0 or y.numel() == 0:
        return y
    cl = is_channels_last(x)
    cfg = CFG[cl]
    grid = (triton.cdiv(ho * wo, cfg["BLOCK_P"]), triton.cdiv(c, cfg["BLOCK_C"]), n)
    dwconv_bn_act_kernel[grid](
        x, wt, scale32, shift32, y, sums if sums is not None else scale32,
        c, h, w, ho, wo, *x.stride(), *y.stride(), k, stride, pad, act_code(act),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, WITH_SUM=sums is not None,
        num_warps=cfg["num_warps"])
    return y


def dwconv_bn_act(x, weight, scale, shift, stride: int = 1, padding: int = -1, act: str = "identity"):
    check_dtype("dwconv_bn_act", x)
    k = weight.shape[-1]
    pad = k // 2 if padding < 0 else padding
    return _launch(x, prepare_weight(weight), k, vec32(scale), vec32(shift), stride, pad, act)


def configs():
    out = []
    for dt in DTYPES:
        for cl in (True, False):
            for with_sum in (False, True):
                cfg = CFG[cl]
                out.append(spec(
                    dwconv_bn_act_kernel,
                    dict(x_ptr=PTR[dt], w_ptr="*fp32", scale_ptr="*fp32", shift_ptr="*fp32", y_ptr=PTR[dt],
                         sum_ptr="*fp32"),
                    dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, WITH_SUM=with_sum),
                    cfg["num_warps"],
                    label=f"{DTYPE_NAME[dt]} {'cl' if cl else 'nchw'}{' +sum' if with_sum else ''} "
                          f"P{cfg['BLOCK_P']}xC{cfg['BLOCK_C']} w{cfg['num_warps']}"))
    return out
