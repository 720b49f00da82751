"""channel_shuffle: out[n, co] = x[n, (co % g) * (C/g) + co // g], one strided copy kernel.

Tiles of (pixels x channels) of one sample, channels fastest for channels_last (the gather over channels stays
inside a pixel's contiguous channel vector), pixels fastest for NCHW (whole contiguous planes are copied).
"""
import triton
import triton.language as tl

from ._utils import DTYPE_NAME, DTYPES, PTR, check_dtype, empty_like_format, is_channels_last, spec
from .tiles import pixel_channel_tile

CFG = {True: dict(BLOCK_P=32, BLOCK_C=64, num_warps=4), False: dict(BLOCK_P=256, BLOCK_C=8, num_warps=4)}


@triton.jit
def channel_shuffle_kernel(x_ptr, y_ptr, C, CPG, G, HW, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                           BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    n, p, co = pixel_channel_tile(BLOCK_P, BLOCK_C, CHANNELS_LAST)
    m = (p < HW) & (co < C)
    ci = (co % G) * CPG + co // G
    h = p // W
    w = p % W
    v = tl.load(x_ptr + n * sxn + ci * sxc + h * sxh + w * sxw, mask=m)
    tl.store(y_ptr + n * syn + co * syc + h * syh + w * syw, v, mask=m)


def channel_shuffle(x, groups: int):
    check_dtype("channel_shuffle", x)
    n, c, h, w = x.shape
    y = empty_like_format(x, (n, c, h, w))
    if y.numel() == 0:
        return y
    cl = is_channels_last(x)
    cfg = CFG[cl]
    channel_shuffle_kernel[(triton.cdiv(h * w, cfg["BLOCK_P"]), triton.cdiv(c, cfg["BLOCK_C"]), n)](
        x, y, c, c // groups, groups, h * w, w, *x.stride(), *y.stride(),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, num_warps=cfg["num_warps"])
    return y


def configs():
    out = []
    for dt in DTYPES:
        for cl in (True, False):
            cfg = CFG[cl]
            out.append(spec(channel_shuffle_kernel, dict(x_ptr=PTR[dt], y_ptr=PTR[dt]),
                            dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl), cfg["num_warps"],
                            label=f"{DTYPE_NAME[dt]} {'cl' if cl else 'nchw'} P{cfg['BLOCK_P']}xC{cfg['BLOCK_C']} "
                                  f"w{cfg['num_warps']}"))
    return out
