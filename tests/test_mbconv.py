"""mbconv and fused_mbconv on every backend against the reference (float64 oracle)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastzoo
from fastzoo import _ext, ops
from fastzoo.activations import ACTIVATIONS
from helpers import FORMATS, bn_vectors, check_close, expected_format, layout, num_threads, oracle, poison, rand


def mbconv_args(d, dtype, n, cin, cexp, cout, h, w, k, stride, expand, se, act, se_act, se_gate, residual, fmt):
    r = lambda *s: rand(*s, dtype=dtype, device=d)  # noqa: E731
    x = layout(r(n, cin, h, w), fmt)
    cmid = cexp if expand else cin
    exp = (r(cmid, cin, 1, 1), *bn_vectors(cmid, d)) if expand else (None,) * 3
    cs = max(1, cmid // 4)
    se_args = (r(cs, cmid, 1, 1), rand(cs, device=d), r(cmid, cs, 1, 1), rand(cmid, device=d)) if se else (None,) * 4
    return (x, *exp, r(cmid, 1, k, k), *bn_vectors(cmid, d), *se_args, r(cout, cmid, 1, 1), *bn_vectors(cout, d),
            stride, act, se_act, se_gate, residual)


def run_mbconv(impl, n=2, cin=16, cexp=40, cout=16, h=9, w=7, k=3, stride=1, expand=True, se=True, act="hardswish",
               se_act="relu", se_gate="hardsigmoid", residual=True, fmt="channels_last", dtype=torch.float32):
    args = mbconv_args(impl.device, dtype, n, cin, cexp, cout, h, w, k, stride, expand, se, act, se_act, se_gate,
                       residual, fmt)
    poison(impl.device, n * cexp * h * w)
    y = ops.mbconv(*args)
    check_close(y, oracle("mbconv", *args).to(dtype), dtype)
    expected_format(args[0], y)


def run_fused(impl, n=2, cin=16, cexp=40, cout=16, h=9, w=7, k=3, stride=1, project=True, act="silu", residual=True,
              fmt="channels_last", dtype=torch.float32):
    d = impl.device
    r = lambda *s: rand(*s, dtype=dtype, device=d)  # noqa: E731
    x = layout(r(n, cin, h, w), fmt)
    cmid = cexp if project else cout
    proj = (r(cout, cmid, 1, 1), *bn_vectors(cout, d)) if project else (None,) * 3
    args = (x, r(cmid, cin, k, k), *bn_vectors(cmid, d), *proj, stride, act, residual)
    poison(d, n * cexp * h * w)
    y = ops.fused_mbconv(*args)
    check_close(y, oracle("fused_mbconv", *args).to(dtype), dtype)
    expected_format(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("expand,se", [(True, True), (True, False), (False, True), (False, False)])
def test_mbconv_structure(impl, fmt, expand, se):
    run_mbconv(impl, expand=expand, se=se, fmt=fmt)


@pytest.mark.parametrize("k,stride", [(3, 2), (5, 1), (5, 2), (7, 1)])
def test_mbconv_kernel_stride(impl, k, stride):
    run_mbconv(impl, k=k, stride=stride, cout=24, residual=False, h=11, w=10)


@pytest.mark.parametrize("act,se_act,se_gate", [("relu", "relu", "hardsigmoid"), ("silu", "silu", "sigmoid"),
                                                ("relu6", "relu", "sigmoid"), ("gelu", "gelu", "hardsigmoid")])
def test_mbconv_activations(impl, act, se_act, se_gate):
    run_mbconv(impl, act=act, se_act=se_act, se_gate=se_gate, fmt="nchw")


@pytest.mark.parametrize("shape", [(1, 8, 8, 8, 1, 1), (3, 5, 19, 7, 3, 5), (1, 24, 72, 24, 14, 14)])
def test_mbconv_edge_shapes(impl, shape):
    n, cin, cexp, cout, h, w = shape
    run_mbconv(impl, n=n, cin=cin, cexp=cexp, cout=cout, h=h, w=w, residual=cin == cout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_mbconv_dtypes(impl, dtype):
    if dtype == torch.float64 and impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16")
    run_mbconv(impl, dtype=dtype)
    run_mbconv(impl, n=1, dtype=dtype)  # batch 1: the SE gate folded into the projection weights
    run_fused(impl, dtype=dtype, fmt="nchw")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("project", [True, False])
def test_fused_mbconv_structure(impl, fmt, project):
    run_fused(impl, project=project, fmt=fmt)


@pytest.mark.parametrize("k,stride,act", [(3, 2, "silu"), (5, 1, "relu"), (3, 1, "gelu")])
def test_fused_mbconv_kernel_stride(impl, k, stride, act):
    run_fused(impl, k=k, stride=stride, cout=24, residual=False, h=11, w=10, act=act)


# Few input channels (the stems): the CPU runs a direct conv for K*K*Cin <= 80 into channels_last output, in
# AVX-512 (bf16 too) where the CPU has it: tiles of up to 8 pixels (a shorter last one) x up to 64 channels (72
# takes a second block and a partial vector), patches read in place inside channels_last x and gathered at the
# borders; K 3 with 3 channels unrolled at compile time; in bf16 odd patch rows (K * Cin) end in a lone value.
@pytest.mark.parametrize("n,cin,cout,h,w,k,stride,project", [
    (1, 3, 16, 15, 13, 3, 2, False), (2, 3, 32, 12, 11, 3, 2, False), (1, 3, 72, 9, 9, 3, 1, False),
    (1, 3, 40, 10, 9, 5, 2, True), (2, 8, 20, 7, 8, 3, 1, False), (1, 3, 16, 6, 37, 3, 2, False),
    (1, 3, 24, 5, 30, 3, 1, False), (1, 3, 48, 9, 25, 5, 2, False)])
@pytest.mark.parametrize("act", ["hardswish", "silu"])  # silu: in AVX-512 after each row where the CPU has it
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_mbconv_few_input_channels(impl, dtype, fmt, act, n, cin, cout, h, w, k, stride, project):
    run_fused(impl, n=n, cin=cin, cexp=cout, cout=cout if not project else 24, h=h, w=w, k=k, stride=stride,
              project=project, act=act, residual=False, fmt=fmt, dtype=dtype)


# One output column at stride 2 in bf16: oneDNN's bf16 conv (torch 2.14.1, on an AMX Xeon) returned wrong values
# there (errors the size of the outputs), which the CPU kernels' at::convolution fallbacks and the reference
# passed on; both now take float32 for it. NCHW (the stems' direct conv wants channels_last output), a projection.
@pytest.mark.parametrize("cin,cout,h,w,project", [(2, 20, 12, 1, False), (8, 4, 12, 2, False), (3, 20, 24, 2, True)])
@pytest.mark.parametrize("fmt", FORMATS)
def test_fused_mbconv_bf16_one_column(impl, fmt, cin, cout, h, w, project):
    if impl.name == "triton" and impl.device == "cpu":
        pytest.skip("Triton's fused_mbconv takes its KxK conv from torch (cuDNN on a GPU): under the interpreter on "
                    "the CPU that is the oneDNN bf16 conv this test is about")
    run_fused(impl, n=1, cin=cin, cexp=cout, cout=cout if not project else 8, h=h, w=w, k=3, stride=2,
              project=project, act="hardswish", residual=False, fmt=fmt, dtype=torch.bfloat16)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2), cin=st.integers(1, 24), cexp=st.integers(1, 48), cout=st.integers(1, 24),
       h=st.integers(1, 10), w=st.integers(1, 10), k=st.sampled_from([3, 5]), stride=st.sampled_from([1, 2]),
       expand=st.booleans(), se=st.booleans(), fmt=st.sampled_from(FORMATS),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_property_cpu(n, cin, cexp, cout, h, w, k, stride, expand, se, fmt, dtype):
    from conftest import Impl
    impl = Impl("cpu", "cpu")
    if impl.why_skip():
        pytest.skip(impl.why_skip())
    residual = stride == 1 and cin == cout
    with fastzoo.backend("cpu"):
        run_mbconv(impl, n, cin, cexp, cout, h, w, k, stride, expand, se, residual=residual, fmt=fmt, dtype=dtype)
        run_fused(impl, n, cin, cexp, cout, h, w, k, stride, expand, residual=residual, fmt=fmt, dtype=dtype)


# Maps big enough for several strips of rows per image.
MANY_STRIPS = [
    (1, 16, 72, 24, 56, 56, 3, 2, False),
    (1, 16, 96, 16, 57, 43, 5, 1, True),
    (2, 24, 144, 24, 64, 60, 7, 1, False),
    (3, 40, 240, 40, 28, 28, 5, 1, True),
    (1, 32, 192, 64, 75, 91, 3, 2, True),
]


# The CPU's cache-tiled path (float32, channels_last): several strips of rows, with the depthwise halo kept
# from strip to strip, a whole image per strip, small maps at batch 1 with the channels split across
# threads, and 1 or 2 threads (the strip planner depends on both). The cpu backend only: the path is the C++
# fast path's, and these sizes take minutes in the Triton interpreter.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cexp,cout,h,w,k,stride,se", MANY_STRIPS + [
    (1, 80, 480, 80, 14, 14, 5, 1, True),  # batch 1, small maps: channels split across threads
    (1, 24, 144, 40, 7, 9, 5, 2, False),
    (1, 192, 1152, 320, 7, 7, 3, 1, True),  # wide, whole image fits one strip: channels split, not strips
    # channel split with partial weight panels: 244 = 15 x 16 + 4 expanded channels, 40 output channels (3
    # panels: the projection by pixel rows on 2 threads), 24 (a half panel, by channel blocks), 20
    (1, 40, 244, 40, 14, 14, 5, 1, True),
    (1, 24, 100, 24, 14, 14, 5, 1, True),
    (1, 24, 100, 20, 13, 11, 5, 1, False),
    # SE on strips: the gate folded into the packed projection weights per image (Cout < pixels, above), or
    # applied to the rows (Cout >= pixels; and float32 batch 1 with at most 4 pixels per output channel, the
    # 14x14 blocks below)
    (2, 16, 64, 48, 6, 6, 3, 1, True),
    # batch 1, strips balanced across the threads: 28 rows as 4 x 7 (not 13 + 13 + 2), and the SE pass 2 at
    # 14x14 cut into one piece per thread
    (1, 24, 88, 24, 28, 28, 3, 1, False),
    (1, 24, 96, 40, 28, 28, 5, 2, True),
    # batch 1, too big for the channel split: strips where each thread's run of strips recomputes little
    # halo, else (k7 at 14x14 on 2 threads) the untiled path (its GEMMs with the epilogue in registers), with
    # and without SE; on 2 threads the first four expand the whole image first, in row parts, their halo rows
    # being 0.5 M multiply-adds or more
    (1, 112, 672, 112, 14, 14, 5, 1, True),
    (1, 112, 672, 112, 14, 14, 3, 1, False),
    (1, 96, 576, 96, 15, 13, 5, 2, True),
    (1, 40, 240, 40, 28, 28, 5, 1, True),
    (1, 112, 672, 112, 14, 14, 7, 1, True),
    (1, 112, 672, 112, 14, 14, 7, 1, False),
])
@pytest.mark.parametrize("act", ["hardswish", "silu"])  # silu: the AVX-512 epilogues where the CPU has them
def test_mbconv_strips(impl, act, threads, n, cin, cexp, cout, h, w, k, stride, se):
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the tiled path is the C++ CPU fast path")
    with num_threads(threads):
        run_mbconv(impl, n=n, cin=cin, cexp=cexp, cout=cout, h=h, w=w, k=k, stride=stride, se=se, act=act,
                   residual=stride == 1 and cin == cout)


# bf16 in strips (batch 3 on 1-2 threads): the tiled path with bf16 GEMMs where the CPU has AVX512-BF16 (the
# expanded rows and the depthwise in float32); odd and partial-panel channel counts, no expansion (the input
# rows converted), SE (the gate applied as the rows are converted for the projection), stride 2, K 5.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin,cexp,cout,k,stride,expand,se", [
    (16, 40, 16, 3, 1, True, True),
    (5, 19, 5, 5, 1, True, True),
    (7, 33, 18, 3, 2, True, False),
    (24, 72, 24, 3, 1, True, False),
    (9, 9, 9, 3, 1, False, True),
    (16, 16, 24, 5, 2, False, False),
])
def test_mbconv_bf16_strips(impl, threads, cin, cexp, cout, k, stride, expand, se):
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the tiled path is the C++ CPU fast path")
    with num_threads(threads):
        run_mbconv(impl, n=3, cin=cin, cexp=cexp, cout=cout, h=13, w=11, k=k, stride=stride, expand=expand, se=se,
                   act="silu", residual=stride == 1 and cin == cout, dtype=torch.bfloat16)


# bf16 at batch 1 where float32 would split the channels across threads (bf16 has no channel split): the untiled
# path, the SE gate applied to the dw output's rows and the projection through the bf16 GEMM, on maps with more
# pixels than output channels (14x14) and with fewer (7x7).
@pytest.mark.parametrize("cin,cexp,cout,h,k", [(40, 480, 40, 14, 5), (96, 1152, 160, 7, 3)])
def test_mbconv_bf16_batch1_se(impl, cin, cexp, cout, h, k):
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the untiled bf16 path of the C++ CPU kernels")
    with num_threads(2):
        run_mbconv(impl, n=1, cin=cin, cexp=cexp, cout=cout, h=h, w=h, k=k, se=True, act="silu",
                   residual=cin == cout, dtype=torch.bfloat16)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_mbconv_bf16_activations(impl, act):
    """bf16 fused_mbconv without projection: the conv, then the activation in place (in AVX-512 where the CPU has
    AVX512-BF16); every activation, 3 * 7 * 5 * 5 outputs (a last vector of 13)."""
    run_fused(impl, n=3, cin=4, cexp=7, cout=7, h=5, w=5, project=False, act=act, residual=False,
              dtype=torch.bfloat16)


# parallel_tasks: a thread that is ahead takes strips from the back of another's run, backwards, keeping the
# halo rows from one to the next the other way round. Which strips move depends on timing, so one thread
# runs them in that order here (half forwards, the rest backwards), several strips per image.
@pytest.mark.parametrize("n,cin,cexp,cout,h,w,k,stride,se", MANY_STRIPS)
def test_mbconv_strips_stolen_order(impl, n, cin, cexp, cout, h, w, k, stride, se):
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the tiled path is the C++ CPU fast path")
    _ext._C.set_simulated_stealing(True)
    try:
        with num_threads(1):
            run_mbconv(impl, n=n, cin=cin, cexp=cexp, cout=cout, h=h, w=w, k=k, stride=stride, se=se,
                       residual=stride == 1 and cin == cout)
    finally:
        _ext._C.set_simulated_stealing(False)
