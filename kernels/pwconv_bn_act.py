"""pwconv_bn_act: 1x1 conv as a tl.dot GEMM, with folded BN + optional residual + activation as epilogue.

The activation is viewed as rows of pixels x Cin channels. Depending on the strides of x, the output and the
residual, the launcher picks the coarsest flat view that all of them allow:
  - flat:       (N*H*W, Cin) rows with a single row stride (channels_last contiguous, and slices of it),
  - per sample: N blocks of (H*W, Cin) (NCHW: the per-sample (Cout,Cin) x (Cin,HW) GEMM, rows contiguous),
  - per row:    N*H blocks of (W, Cin) (any other strides).
The kernel computes Y[rows, Cout] = X[rows, Cin] @ Wt[Cin, Cout] in fp32 (fp32 inputs: IEEE fp32, no TF32), then
act(acc * scale + shift (+ residual)). With HAS_GATE (mbconv), the SE gate g[n, cin] multiplies the X tile as it is
loaded (prologue), so the SE-scaled tensor is never written.
"""
import torch
import triton
import triton.language as tl

from ._utils import DTYPE_NAME, DTYPES, PTR, check_dtype, empty_like_format, flat_stride, interpreting, spec, vec32
from .activation import act_code, apply_act

# per dtype (chosen from compile sweeps for zero spills on sm_80 and sm_90): fp32 is an IEEE FMA dot, spill-free
# only without cp.async pipelining at this tile; fp16/bf16 use tensor cores with 3 stages; 8 warps for both
CFG16 = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=3)
CFG = {torch.float32: dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=1),
       torch.float16: CFG16, torch.bfloat16: CFG16}
_MAX_GRID_Y = 65535
_I32 = 2 ** 31 - 1


@triton.jit
def pwconv_bn_act_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, res_ptr, gate_ptr, y_ptr,
                         M, CIN, COUT, H2, MS, B_OFF,
                         sx_b0, sx_b1, sx_m, sx_c,
                         sy_b0, sy_b1, sy_m, sy_c,
                         sr_b0, sr_b1, sr_m, sr_c,
                         ACT,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr, FP32_IEEE: tl.constexpr,
                         INTERP_UPCAST: tl.constexpr = False):
    # program -> (m tile, n tile); n tiles of one m tile are adjacent so the X tile is reused from L2
    pid = tl.program_id(0)
    num_n = tl.cdiv(COUT, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    b = tl.program_id(1) + B_OFF
    b0 = (b // H2).to(tl.int64)  # sample
    b1 = (b % H2).to(tl.int64)   # row inside the sample (per-row view), else 0

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < M
    nmask = rn < COUT

    a_ptrs = x_ptr + b0 * sx_b0 + b1 * sx_b1 + rm[:, None] * sx_m + rk[None, :] * sx_c
    w_ptrs = w_ptr + rk[:, None] * COUT + rn[None, :]
    if HAS_GATE:
        sample = b0 + rm // MS  # the sample of each row (flat view spans samples)
        g_ptrs = gate_ptr + sample[:, None] * CIN + rk[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, CIN, BLOCK_K):
        kmask = (k0 + rk) < CIN
        a = tl.load(a_ptrs, mask=mmask[:, None] & kmask[None, :], other=0.0)
        if HAS_GATE:
            g = tl.load(g_ptrs, mask=mmask[:, None] & kmask[None, :], other=0.0)
            a = (a.to(tl.float32) * g).to(x_ptr.dtype.element_ty)
            g_ptrs += BLOCK_K
        wt = tl.load(w_ptrs, mask=kmask[:, None] & nmask[None, :], other=0.0)
        if INTERP_UPCAST:  # only under TRITON_INTERPRET: its bf16 tl.dot multiplies the raw uint16 bits
            acc = tl.dot(a.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
        elif FP32_IEEE:
            acc = tl.dot(a, wt, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, wt, acc)
        a_ptrs += BLOCK_K * sx_c
        w_ptrs += BLOCK_K * COUT

    sc = tl.load(scale_ptr + rn, mask=nmask, other=0.0)
    sh = tl.load(shift_ptr + rn, mask=nmask, other=0.0)
    z = acc * sc[None, :] + sh[None, :]
    omask = mmask[:, None] & nmask[None, :]
    if HAS_RES:
        r = tl.load(res_ptr + b0 * sr_b0 + b1 * sr_b1 + rm[:, None] * sr_m + rn[None, :] * sr_c,
                    mask=omask, other=0.0)
        z += r.to(tl.float32)
    z = apply_act(z, ACT)
    tl.store(y_ptr + b0 * sy_b0 + b1 * sy_b1 + rm[:, None] * sy_m + rn[None, :] * sy_c,
             z.to(y_ptr.dtype.element_ty), mask=omask)


def prepare_weight(weight: torch.Tensor, dtype) -> torch.Tensor:
    """(Cout, Cin[,1,1]) -> (Cin, Cout) contiguous in the activation dtype."""
    return weight.reshape(weight.shape[0], weight.shape[1]).t().to(dtype).contiguous()


def _view(tensors, n, h, w):
    """The coarsest flat view (see module doc) every tensor allows: (B, H2, M, MS, per-tensor strides)."""
    max_off = max(sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) for t in tensors)
    if max_off < _I32:
        ss = [flat_stride(t, (0, 2, 3)) for t in tensors]
        if all(s is not None for s in ss):
            return 1, 1, n * h * w, h * w, [(0, 0, s, t.stride(1)) for s, t in zip(ss, tensors)]
    ss = [flat_stride(t, (2, 3)) for t in tensors]
    if all(s is not None for s in ss):
        return n, 1, h * w, h * w, [(t.stride(0), 0, s, t.stride(1)) for s, t in zip(ss, tensors)]
    return n * h, h, w, w, [(t.stride(0), t.stride(2), t.stride(3), t.stride(1)) for t in tensors]


def _launch(x, wt, scale32, shift32, act, residual=None, gate=None, out=None):
    """x (N,Cin,H,W) any strides; wt (Cin,Cout) from prepare_weight; gate fp32 (N,Cin) contiguous or None."""
    n, cin, h, w = x.shape
    cout = wt.shape[1]
    y = out if out is not None else empty_like_format(x, (n, cout, h, w))
    if y.numel() == 0:
        return y
    tensors = [x, y] + ([residual] if residual is not None else [])
    nb, h2, m, ms, strides = _view(tensors, n, h, w)
    cfg = CFG[x.dtype]
    sr = strides[2] if residual is not None else (0, 0, 0, 0)
    grid_x = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(cout, cfg["BLOCK_N"])
    for b_off in range(0, nb, _MAX_GRID_Y):
        pwconv_bn_act_kernel[(grid_x, min(nb - b_off, _MAX_GRID_Y))](
            x, wt, scale32, shift32, residual if residual is not None else x, gate if gate is not None else scale32, y,
            m, cin, cout, h2, ms, b_off, *strides[0], *strides[1], *sr, act_code(act),
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
            HAS_RES=residual is not None, HAS_GATE=gate is not None, FP32_IEEE=x.dtype == torch.float32,
            INTERP_UPCAST=x.dtype == torch.bfloat16 and interpreting(),
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y


def pwconv_bn_act(x, weight, scale, shift, act: str = "identity", residual=None):
    check_dtype("pwconv_bn_act", x)
    return _launch(x, prepare_weight(weight, x.dtype), vec32(scale), vec32(shift), act, residual)


def configs():
    out = []
    for dt in DTYPES:
        cfg = CFG[dt]
        for has_res in (False, True):
            for has_gate in (False, True):
                out.append(spec(
                    pwconv_bn_act_kernel,
                    dict(x_ptr=PTR[dt], w_ptr=PTR[dt], scale_ptr="*fp32", shift_ptr="*fp32", res_ptr=PTR[dt],
                         gate_ptr="*fp32", y_ptr=PTR[dt]),
                    dict(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], HAS_RES=has_res,
                         HAS_GATE=has_gate, FP32_IEEE=dt == torch.float32),
                    cfg["num_warps"], cfg["num_stages"],
                    label=f"{DTYPE_NAME[dt]}{' +res' if has_res else ''}{' +gate' if has_gate else ''} "
                          f"M{cfg['BLOCK_M']}xN{cfg['BLOCK_N']}xK{cfg['BLOCK_K']} w{cfg['num_warps']}"
                          f"s{cfg['num_stages']}"))
    return out
