"""The (pixels x channels) tile every elementwise kernel works on."""
import triton
import triton.language as tl


@triton.jit
def pixel_channel_tile(BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """(n, p, c) of this program: sample n (grid axis 2), pixel indices p (axis 0) and channel indices c
    (axis 1) broadcast to one 2-D tile, channels fastest for channels_last and pixels fastest for NCHW,
    so that neighbouring lanes touch neighbouring addresses."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = tl.program_id(2).to(tl.int64)
    if CHANNELS_LAST:
        p = offs_p[:, None]
        c = offs_c[None, :]
    else:
        p = offs_p[None, :]
        c = offs_c[:, None]
    return n, p, c
