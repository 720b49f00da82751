"""dwconv_bn_act on every backend against the reference (float64 oracle)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastzoo
from fastzoo import _ext, ops
from fastzoo.activations import ACTIVATIONS
from helpers import FORMATS, bn_vectors, check_close, expected_format, layout, num_threads, oracle, poison, rand


def run_case(impl, n, c, h, w, k, stride, act, fmt, dtype=torch.float32, padding=-1):
    x = layout(rand(n, c, h, w, dtype=dtype, device=impl.device), fmt)
    weight = rand(c, 1, k, k, dtype=dtype, device=impl.device)
    scale, shift = bn_vectors(c, impl.device)
    poison(impl.device, max(1, n * c * h * w))
    y = ops.dwconv_bn_act(x, weight, scale, shift, stride, padding, act)
    check_close(y, oracle("dwconv_bn_act", x, weight, scale, shift, stride, padding, act).to(dtype), dtype)
    expected_format(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (9, 2)])
def test_kernel_sizes_strides_formats(impl, k, stride, fmt):
    run_case(impl, 2, 13, 11, 9, k, stride, "hardswish", fmt)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activations(impl, act):
    run_case(impl, 1, 20, 7, 8, 3, 1, act, "channels_last")
    run_case(impl, 1, 20, 7, 8, 3, 1, act, "nchw")


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 1, 17), (3, 33, 5, 4), (1, 72, 14, 14)])
def test_edge_shapes(impl, shape):
    run_case(impl, *shape, 3, 2, "relu", "channels_last")
    run_case(impl, *shape, 5, 1, "relu6", "nchw")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 2), (7, 1)])
def test_wide_rows(impl, k, stride, fmt):
    """Rows longer than one register block (the NCHW kernel's 4-vector blocks, a partial last vector)."""
    run_case(impl, 2, 5, 37, 75, k, stride, "hardswish", fmt)


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)])
def test_channels_last_every_width(impl, k, stride):
    """channels_last rows 1-19 pixels wide, default and zero padding: the CPU kernel's blocks of 8 and 4 pixels
    (sliding taps) and of 2 and 1, each with the image's edge inside it or not; 20 channels, two vectors and a
    tail."""
    if impl.name != "cpu":
        pytest.skip("the CPU kernel's pixel blocks")
    for w in range(1, 19 * stride + 1):
        run_case(impl, 1, 20, 3, w, k, stride, "relu6", "channels_last")
        if w >= k:
            run_case(impl, 1, 20, k, w, k, stride, "relu6", "channels_last", padding=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k,stride", [(3, 1), (5, 1), (7, 1), (3, 2), (5, 2)])
def test_narrow_planes_every_height(impl, k, stride, dtype):
    """NCHW planes one vector wide, 1-9 output rows (the kernel's 8-row blocks and their tails; 16-bit types
    through its float plane and the separate activation pass)."""
    for rows in range(1, 10):
        run_case(impl, 2, 3, (rows - 1) * stride + 1, 7, k, stride, "hardswish", "nchw", dtype, padding=k // 2)


@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_nan_propagates(impl, act, fmt):
    """A NaN in x gives NaN wherever the reference has one (the clamping activations included)."""
    x = rand(1, 16, 9, 20)
    x[0, 3, 4, 5] = float("nan")
    x = layout(x, fmt)
    weight, (scale, shift) = rand(16, 1, 3, 3), bn_vectors(16)
    x, weight, scale, shift = (t.to(impl.device) for t in (x, weight, scale, shift))
    y = ops.dwconv_bn_act(x, weight, scale, shift, 1, -1, act)
    expected = oracle("dwconv_bn_act", x, weight, scale, shift, 1, -1, act)
    assert torch.isnan(y).sum() == 9
    assert torch.equal(torch.isnan(y).cpu(), torch.isnan(expected).cpu())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(impl, dtype):
    if dtype == torch.float64 and impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16")
    run_case(impl, 2, 24, 9, 10, 3, 1, "silu", "channels_last", dtype)
    run_case(impl, 2, 24, 9, 10, 5, 2, "hardswish", "nchw", dtype)


def test_explicit_padding(impl):
    run_case(impl, 2, 8, 10, 10, 3, 1, "relu", "nchw", padding=0)
    run_case(impl, 2, 8, 10, 10, 3, 2, "relu", "channels_last", padding=2)
    for pad in (0, 1, 2):  # stride 2 on rows long enough for the vector deinterleave, each pad parity
        run_case(impl, 1, 3, 9, 37, 3, 2, "relu", "nchw", padding=pad)



@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 16), w=st.integers(1, 16),
       k=st.sampled_from([3, 5, 7]), stride=st.sampled_from([1, 2]), act=st.sampled_from(ACTIVATIONS),
       fmt=st.sampled_from(FORMATS), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_property_cpu(n, c, h, w, k, stride, act, fmt, dtype):
    """Hypothesis over shapes, kernels, strides, activations, formats and dtypes (CPU kernels)."""
    from conftest import Impl
    impl = Impl("cpu", "cpu")
    if impl.why_skip():
        pytest.skip(impl.why_skip())
    with fastzoo.backend("cpu"):
        run_case(impl, n, c, h, w, k, stride, act, fmt, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nchw_planes_stolen_order(impl, dtype):
    """The NCHW kernel's runs of planes go through parallel_tasks: one thread runs them in a stealing thread's
    order here (its own run forwards, another's from the back), each plane exactly once."""
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the C++ CPU kernel's work stealing")
    _ext._C.set_simulated_stealing(True)
    try:
        with num_threads(1):
            run_case(impl, 3, 37, 9, 10, 3, 1, "hardswish", "nchw", dtype)
            run_case(impl, 2, 40, 14, 14, 5, 2, "silu", "nchw", dtype)
    finally:
        _ext._C.set_simulated_stealing(False)


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)])
def test_nchw_channel_groups(impl, k, stride):
    """float32 NCHW through the CPU kernel's channel groups (eight channels turned channels_last by 8x8
    transposes; one thread and at least four groups, so the path is taken): 7x7 and 14x14 outputs (7 pixels a
    taps call, output staged; at stride 1 the planes turned as flat runs, no padding in the scratch), 28-wide
    rows (7 a call, not staged), 8-wide and wider rows (8 a call, the last call over padding), channels past the
    last full group, several images, odd sizes, zero padding, every activation. Where the CPU has AVX-512, the
    NCHW rows take some of these shapes; test_avx2_fallback runs them again without."""
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the C++ CPU kernel's channel groups")
    with num_threads(1):
        for c, h, w in [(37, 7 * stride, 7 * stride), (32, 8 * stride, 8 * stride + 1), (35, 13, 30),
                        (33, 14 * stride, 14 * stride), (34, 10 * stride, 28 * stride), (40, 9, 60)]:
            run_case(impl, 1, c, h, w, k, stride, "hardswish", "nchw")
        run_case(impl, 3, 20, 7 * stride, 7 * stride, k, stride, "silu", "nchw")
        run_case(impl, 2, 21, 11, 9, k, stride, "relu", "nchw", padding=0)
        for act in ACTIVATIONS:
            run_case(impl, 1, 33, 7, 7, k, stride, act, "nchw")


@pytest.mark.parametrize("k,stride", [(3, 1), (5, 1), (3, 2)])
def test_nchw_rows512(impl, k, stride):
    """float32 NCHW through the CPU kernel's AVX-512 rows (where the CPU has AVX-512; the AVX2 paths in
    test_avx2_fallback): output rows 9-49 wide (16-wide vectors with the image's left edge, its right edge or both
    inside them, a last vector of one lane; at stride 2 the second load of each vector past the row or not; at
    stride 1, K 3 a last vector of 1-8 lanes as an 8-lane one, 24 and 56 wide filling it), 1-24 output rows
    (tiles of 7 rows on planes of up to 14, of 4 on taller ones, reaching above and below the image; fewer rows
    than the padding), a crop whose rows are not contiguous with each other, every activation."""
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the C++ CPU kernel's AVX-512 rows")
    for ow in (9, 12, 14, 16, 17, 20, 24, 31, 32, 33, 49, 56):
        for w in {(ow - 1) * stride + 1, ow * stride}:
            for rows in (6, 17):
                run_case(impl, 2, 3, rows * stride, w, k, stride, "hardswish", "nchw")
    for rows in range(1, 25):
        for h in {(rows - 1) * stride + 1, rows * stride}:
            run_case(impl, 1, 5, h, 18 * stride, k, stride, "relu6", "nchw")
    for act in ACTIVATIONS:
        for rows in (9, 15):
            for ow in (14, 24):
                run_case(impl, 1, 4, rows * stride, ow * stride, k, stride, act, "nchw")
    x = rand(2, 6, 40, 80)[:, 1:5, 2:11 + 20 * stride, 3:3 + 34 * stride]  # unit-stride rows, 80 floats apart
    weight, (scale, shift) = rand(4, 1, k, k), bn_vectors(4)
    poison("cpu", x.numel())
    y = ops.dwconv_bn_act(x, weight, scale, shift, stride, -1, "silu")
    check_close(y, oracle("dwconv_bn_act", x, weight, scale, shift, stride, -1, "silu"), torch.float32)
    assert y.is_contiguous()


def test_nchw_row_pairs(impl):
    """float32 NCHW planes 6-8 wide and 1-8 high at stride 1, K 3, through the CPU kernel's AVX-512 row pairs (two
    rows per vector, each lane masked by its own row and column; where the CPU has AVX-512): every such plane, a
    channel slice (planes apart, rows contiguous), every activation."""
    if impl.name != "cpu" or impl.shared_math:
        pytest.skip("the C++ CPU kernel's AVX-512 row pairs")
    for w in (6, 7, 8):
        for h in range(1, 9):
            run_case(impl, 2, 3, h, w, 3, 1, "hardswish", "nchw")
    for act in ACTIVATIONS:
        run_case(impl, 1, 5, 7, 7, 3, 1, act, "nchw")
    x = rand(2, 10, 7, 7)[:, ::2]
    weight, (scale, shift) = rand(5, 1, 3, 3), bn_vectors(5)
    poison("cpu", x.numel())
    y = ops.dwconv_bn_act(x, weight, scale, shift, 1, -1, "relu")
    check_close(y, oracle("dwconv_bn_act", x, weight, scale, shift, 1, -1, "relu"), torch.float32)
