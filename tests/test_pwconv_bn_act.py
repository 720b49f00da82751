"""pwconv_bn_act on every backend against the reference (float64 oracle)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastzoo
from fastzoo import ops
from fastzoo.activations import ACTIVATIONS
from helpers import FORMATS, bn_vectors, check_close, expected_format, layout, num_threads, oracle, poison, rand


def run_case(impl, n, cin, cout, h, w, act, fmt, dtype=torch.float32, with_residual=False, weight_2d=False,
             residual_fmt="nchw"):
    x = layout(rand(n, cin, h, w, dtype=dtype, device=impl.device), fmt)
    weight = rand(cout, cin, dtype=dtype, device=impl.device) if weight_2d else \
        rand(cout, cin, 1, 1, dtype=dtype, device=impl.device)
    scale, shift = bn_vectors(cout, impl.device)
    res = layout(rand(n, cout, h, w, dtype=dtype, device=impl.device), residual_fmt) if with_residual else None
    poison(impl.device, max(1, n * cout * h * w))
    y = ops.pwconv_bn_act(x, weight, scale, shift, act, res)
    check_close(y, oracle("pwconv_bn_act", x, weight, scale, shift, act, res).to(dtype), dtype)
    expected_format(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("with_residual", [False, True])
def test_formats_residual(impl, fmt, with_residual):
    run_case(impl, 2, 24, 40, 7, 9, "hardswish", fmt, with_residual=with_residual)


@pytest.mark.parametrize("residual_fmt", FORMATS)
def test_residual_in_another_format(impl, residual_fmt):
    run_case(impl, 2, 16, 16, 5, 5, "relu", "channels_last", with_residual=True, residual_fmt=residual_fmt)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activations(impl, act):
    run_case(impl, 1, 19, 21, 5, 6, act, "channels_last")


# (1, 2, 1, 1, 1): one pixel whose NCHW strides say W-stride 1 < Cin, which BLAS rejects as a row stride (the
# CPU once returned the epilogue of zeros there); the classifier-as-1x1 shape (1, 1280, 1000, 1, 1) likewise.
# 1x1 maps with 1-2 rows run the CPU's matrix-vector kernel (four output channels per pass, a masked tail
# of Cin), 3 or more its GEMM: Cin and Cout not multiples of 8 or 4.
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (1, 2, 1, 1, 1), (1, 1280, 1000, 1, 1), (1, 3, 5, 1, 17),
                                   (3, 33, 7, 4, 5), (2, 96, 576, 7, 7), (2, 13, 7, 1, 1), (1, 577, 1003, 1, 1),
                                   (3, 29, 11, 1, 1), (32, 37, 9, 1, 1)])
def test_edge_shapes(impl, shape):
    n, cin, cout, h, w = shape
    run_case(impl, n, cin, cout, h, w, "relu6", "channels_last", with_residual=True)
    run_case(impl, n, cin, cout, h, w, "identity", "nchw", weight_2d=True)


# float32 channels_last, 3 pixels or more: on the CPU, the packed-weight GEMM with the epilogue in registers,
# split by rows (256 pixels) or by 16-channel weight panels (fewer rows), Cout past a panel or a vector;
# every activation, a residual, and input rows wider than Cin (a channel slice).
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cout,h,w", [(1, 24, 40, 16, 16), (2, 19, 21, 7, 9), (1, 5, 100, 9, 8),
                                            (1, 7, 33, 1, 3)])
def test_packed_gemm_shapes(impl, threads, n, cin, cout, h, w):
    with num_threads(threads):
        for act in ACTIVATIONS:
            run_case(impl, n, cin, cout, h, w, act, "channels_last", with_residual=act in ("relu", "silu"))
        wide = layout(rand(n, cin + 3, h, w, device=impl.device), "channels_last")
        x = wide[:, 2:cin + 2]
        weight = rand(cout, cin, 1, 1, device=impl.device)
        scale, shift = bn_vectors(cout, impl.device)
        poison(impl.device, n * cout * h * w)
        check_close(ops.pwconv_bn_act(x, weight, scale, shift, "silu"),
                    oracle("pwconv_bn_act", x, weight, scale, shift, "silu").float(), torch.float32)


def bf16_gemms():
    """The CPU kernels run bf16 1x1 convs through their own GEMM (vdpbf16ps) on this CPU."""
    return fastzoo._ext.loaded() and fastzoo._ext._C.cpu_kernels()["avx512bf16"]


# bf16 channels_last through the bf16 GEMM (float32 accumulation) where the CPU has AVX512-BF16, split by rows
# or by 16-channel panels: odd Cin (the last pair's upper half 0), last panels of 1-15 channels, 1-3 pixels
# (the classifier's rows), a residual. Where the CPU has AMX too, its blocks of 16 rows take AMX: Cin under
# 32, 32 x 2 and 32 x 2 + 6 (the last K % 32 in tiles of their own), 5 and 7 panels (in groups of 4), 6 and 14
# rows left to the vdpbf16ps tiles (test_amx_bf16.py runs these again without AMX). Its one rounding is the
# output's to bf16, so every element is within one bf16 step (2^-8 relative) of the float64 oracle on the same
# bf16 inputs; with SiLU, computed to bf16's precision (silu512_bf16, 1e-4 relative) before that rounding, within
# 2^-8 + 1.2e-4 (against 2^-8 alone, 400 random draws of the first shape needed up to 1.008 x 2^-8, and a CI run
# failed at 1.016x).
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cout,h,w", [(2, 24, 40, 9, 7), (1, 19, 33, 5, 5), (3, 7, 100, 1, 1),
                                            (1, 5, 17, 1, 3), (2, 70, 72, 5, 7), (1, 64, 100, 4, 8)])
def test_bf16_gemm_one_rounding(impl, threads, n, cin, cout, h, w):
    if impl.name != "cpu" or impl.shared_math or not bf16_gemms():
        pytest.skip("the bf16 GEMM of the C++ CPU kernels, on a CPU with AVX512-BF16")
    bf16 = torch.bfloat16
    with num_threads(threads):
        for act, with_res in (("identity", True), ("silu", False), ("hardswish", True), ("relu6", False)):
            x = layout(rand(n, cin, h, w, dtype=bf16), "channels_last")
            weight = rand(cout, cin, 1, 1, dtype=bf16)
            scale, shift = bn_vectors(cout)
            res = layout(rand(n, cout, h, w, dtype=bf16), "channels_last") if with_res else None
            poison("cpu", n * cout * h * w)
            y = ops.pwconv_bn_act(x, weight, scale, shift, act, res)
            assert y.dtype == bf16 and y.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(y.double(), oracle("pwconv_bn_act", x, weight, scale, shift, act, res),
                                       rtol=2 ** -8 + (1.2e-4 if act == "silu" else 0), atol=1e-5)


def test_bf16_silu_epilogue(impl):
    """The bf16 GEMM's SiLU, computed to bfloat16's precision only (silu512_bf16): through an identity 1x1 conv
    (exact products, one per sum), 20,000 pre-activations over [-120, 120] come out within one bf16 step of the
    float64 oracle on the same bf16 inputs; a shift of NaN gives NaN, of +inf gives +inf."""
    if impl.name != "cpu" or impl.shared_math or not bf16_gemms():
        pytest.skip("the bf16 GEMM of the C++ CPU kernels, on a CPU with AVX512-BF16")
    z = torch.linspace(-120, 120, 16 * 1250, dtype=torch.float64)
    z = z[torch.randperm(z.numel())].view(1, 16, 25, 50).to(torch.bfloat16)
    weight = torch.eye(16, dtype=torch.bfloat16).view(16, 16, 1, 1)
    shift = torch.zeros(16)
    shift[3], shift[4] = float("nan"), float("inf")
    poison("cpu", z.numel())
    y = ops.pwconv_bn_act(layout(z, "channels_last"), weight, torch.ones(16), shift, "silu")
    oracle_y = torch.nn.functional.silu(z.double() + shift.double().view(-1, 1, 1))
    assert y[0, 4].isinf().all() and y[0, 3].isnan().all()
    torch.testing.assert_close(y.double(), oracle_y, rtol=2 ** -8, atol=1e-30, equal_nan=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter (numpy) on the NaN and inf
def test_silu_epilogue_special_values(impl):
    """The GEMM's SiLU epilogue (in AVX-512 where the CPU has it): NaN stays NaN, inf stays inf, and
    pre-activations out to +-120 (exp clamped above, overflowing to a signed zero below), against the float64
    oracle; 44 output channels (a last panel of 12), 35 pixels (a last tile of 5 rows)."""
    x = layout(rand(1, 24, 5, 7, device=impl.device), "channels_last")
    x[0, :, 1, 2] = float("nan")
    x[0, :, 3, 4] = float("inf")
    weight = rand(44, 24, 1, 1, device=impl.device) * 0.01
    scale = torch.ones(44, device=impl.device)
    shift = torch.linspace(-120, 120, 44, device=impl.device)
    poison(impl.device, 44 * 35)
    y = ops.pwconv_bn_act(x, weight, scale, shift, "silu")
    z = torch.nn.functional.conv2d(x.double(), weight.double()) * scale.double().view(-1, 1, 1) \
        + shift.double().view(-1, 1, 1)
    torch.testing.assert_close(y, torch.nn.functional.silu(z).float(), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_silu_epilogue_accuracy_sweep(impl):
    """SiLU of 40,000 pre-activations spread over [-85, 85] (through an identity 1x1 conv, so the GEMM adds only
    exact zeros): within 1e-6 relative of the float64 oracle, a bound that a shortened exp polynomial misses (the
    AVX-512 form's error grows with |v| to 4e-7 at -85, ln2 being one float)."""
    z = torch.linspace(-85, 85, 16 * 2500, dtype=torch.float64)
    x = layout(z[torch.randperm(z.numel())].view(1, 16, 50, 50).float().to(impl.device), "channels_last")
    weight = torch.eye(16, device=impl.device).view(16, 16, 1, 1)
    poison(impl.device, x.numel())
    y = ops.pwconv_bn_act(x, weight, torch.ones(16, device=impl.device), torch.zeros(16, device=impl.device), "silu")
    torch.testing.assert_close(y.cpu().double(), torch.nn.functional.silu(x.cpu().double()), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(impl, dtype):
    if dtype == torch.float64 and impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16")
    run_case(impl, 2, 40, 24, 6, 7, "silu", "channels_last", dtype, with_residual=True)
    run_case(impl, 2, 40, 24, 6, 7, "gelu", "nchw", dtype)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), cin=st.integers(1, 48), cout=st.integers(1, 48), h=st.integers(1, 9),
       w=st.integers(1, 9), act=st.sampled_from(ACTIVATIONS), fmt=st.sampled_from(FORMATS),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), with_residual=st.booleans())
def test_property_cpu(n, cin, cout, h, w, act, fmt, dtype, with_residual):
    from conftest import Impl
    impl = Impl("cpu", "cpu")
    if impl.why_skip():
        pytest.skip(impl.why_skip())
    with fastzoo.backend("cpu"):
        run_case(impl, n, cin, cout, h, w, act, fmt, dtype, with_residual)
