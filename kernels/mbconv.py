"""mbconv / fused_mbconv: the inverted-residual blocks as compositions of the fastzoo Triton kernels.

mbconv, four passes over the expanded tensor instead of ~15:
  1. expand: pwconv GEMM + BN + act epilogue (skipped without expand weights),
  2. dwconv + BN + act, whose programs also atomically accumulate the SE channel sums (fp32 (N, C)),
  3. SE: two tiny FC kernels on the sums -> fp32 gate (N, C),
  4. project: pwconv GEMM with the SE gate applied to its input tile as it is loaded (prologue),
     BN epilogue + residual add.
fused_mbconv: KxK conv by F.conv2d (cuDNN; raw weights, so its rounding matches the reference), then one
bn_act kernel (BN + act, + residual when there is no projection), then the project GEMM with the residual
in its epilogue.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import dwconv_bn_act as _dw
from . import pwconv_bn_act as _pw
from . import squeeze_excite as _se
from ._utils import DTYPE_NAME, DTYPES, PTR, check_dtype, empty_like_format, is_channels_last, spec, vec32
from .tiles import pixel_channel_tile
from .activation import act_code, apply_act

CFG = {True: dict(BLOCK_P=32, BLOCK_C=64, num_warps=4), False: dict(BLOCK_P=128, BLOCK_C=16, num_warps=4)}


@triton.jit
def bn_act_kernel(z_ptr, scale_ptr, shift_ptr, res_ptr, y_ptr, C, HW, W,
                  szn, szc, szh, szw, srn, src, srh, srw, syn, syc, syh, syw, ACT,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                  HAS_RES: tl.constexpr):
    """y = act(z * scale[c] + shift[c]) (+ res: added after the activation, as in fused_mbconv)."""
    n, p, c = pixel_channel_tile(BLOCK_P, BLOCK_C, CHANNELS_LAST)
    cmask = c < C
    m = (p < HW) & cmask
    h = p // W
    w = p % W
    z = tl.load(z_ptr + n * szn + c * szc + h * szh + w * szw, mask=m, other=0.0).to(tl.float32)
    sc = tl.load(scale_ptr + c, mask=cmask, other=0.0)
    sh = tl.load(shift_ptr + c, mask=cmask, other=0.0)
    y = apply_act(z * sc + sh, ACT)
    if HAS_RES:
        y += tl.load(res_ptr + n * srn + c * src + h * srh + w * srw, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + n * syn + c * syc + h * syh + w * syw, y.to(y_ptr.dtype.element_ty), mask=m)


def bn_act(z, scale32, shift32, act, residual=None, like=None):
    """act(z * scale + shift) (+ residual), output in the memory format of `like` (default z)."""
    like = z if like is None else like
    n, c, h, w = z.shape
    y = empty_like_format(like, (n, c, h, w))
    if y.numel() == 0:
        return y
    cl = is_channels_last(y)
    cfg = CFG[cl]
    r = residual if residual is not None else z
    bn_act_kernel[(triton.cdiv(h * w, cfg["BLOCK_P"]), triton.cdiv(c, cfg["BLOCK_C"]), n)](
        z, scale32, shift32, r, y, c, h * w, w, *z.stride(), *r.stride(), *y.stride(), act_code(act),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, HAS_RES=residual is not None,
        num_warps=cfg["num_warps"])
    return y


def mbconv(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift,
           se_w1, se_b1, se_w2, se_b2, project_weight, project_scale, project_shift,
           stride: int = 1, act: str = "relu", se_act: str = "relu", se_gate: str = "hardsigmoid",
           residual: bool = False):
    check_dtype("mbconv", x)
    h = x
    if expand_weight is not None:
        h = _pw._launch(x, _pw.prepare_weight(expand_weight, x.dtype), vec32(expand_scale), vec32(expand_shift), act)
    k = dw_weight.shape[-1]
    n, c = h.shape[0], h.shape[1]
    sums = torch.zeros((n, c), dtype=torch.float32, device=x.device) if se_w1 is not None else None
    d = _dw._launch(h, _dw.prepare_weight(dw_weight), k, vec32(dw_scale), vec32(dw_shift), stride, k // 2, act,
                    sums=sums)
    gate = None
    if se_w1 is not None:
        gate = _se.se_gate(sums, d.shape[2] * d.shape[3], se_w1, se_b1, se_w2, se_b2, se_act, se_gate)
    return _pw._launch(d, _pw.prepare_weight(project_weight, x.dtype), vec32(project_scale), vec32(project_shift),
                       "identity", residual=x if residual else None, gate=gate)


def fused_mbconv(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale, project_shift,
                 stride: int = 1, act: str = "silu", residual: bool = False):
    check_dtype("fused_mbconv", x)
    k = conv_weight.shape[-1]
    z = F.conv2d(x, conv_weight, None, stride, k // 2)
    if project_weight is None:
        return bn_act(z, vec32(conv_scale), vec32(conv_shift), act, residual=x if residual else None, like=x)
    h = bn_act(z, vec32(conv_scale), vec32(conv_shift), act, like=x)
    return _pw._launch(h, _pw.prepare_weight(project_weight, x.dtype), vec32(project_scale), vec32(project_shift),
                       "identity", residual=x if residual else None)


def configs():
    out = []
    for dt in DTYPES:
        for cl in (True, False):
            for has_res in (False, True):
                cfg = CFG[cl]
                out.append(spec(bn_act_kernel, dict(z_ptr=PTR[dt], scale_ptr="*fp32", shift_ptr="*fp32",
                                                    res_ptr=PTR[dt], y_ptr=PTR[dt]),
                                dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], CHANNELS_LAST=cl, HAS_RES=has_res),
                                cfg["num_warps"],
                                label=f"{DTYPE_NAME[dt]} {'cl' if cl else 'nchw'}{' +res' if has_res else ''} "
                                      f"P{cfg['BLOCK_P']}xC{cfg['BLOCK_C']} w{cfg['num_warps']}"))
    return out
