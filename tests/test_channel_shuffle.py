"""channel_shuffle on every backend: an exact permutation, checked against the reference and torchvision."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastzoo
from fastzoo import ops
from helpers import FORMATS, check_close, expected_format, layout, oracle, poison, rand


def run_case(impl, n, c, h, w, groups, fmt, dtype=torch.float32):
    x = layout(rand(n, c, h, w, dtype=dtype, device=impl.device), fmt)
    poison(impl.device, max(1, n * c * h * w))
    y = ops.channel_shuffle(x, groups)
    check_close(y, oracle("channel_shuffle", x, groups).to(dtype), dtype)
    assert torch.equal(y.cpu(), fastzoo.reference.channel_shuffle(x, groups).cpu()), "a shuffle is exact"
    expected_format(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("groups", [1, 2, 3, 8])
def test_groups_formats(impl, fmt, groups):
    run_case(impl, 2, 24, 5, 7, groups, fmt)


@pytest.mark.parametrize("shape,groups", [((1, 1, 1, 1), 1), ((1, 4, 1, 17), 2), ((3, 116, 7, 7), 2),
                                          ((1, 232, 3, 5), 4)])
def test_edge_shapes(impl, shape, groups):
    run_case(impl, *shape, groups, "channels_last")
    run_case(impl, *shape, groups, "nchw")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(impl, dtype):
    if dtype == torch.float64 and impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16")
    run_case(impl, 2, 12, 4, 5, 3, "channels_last", dtype)
    run_case(impl, 2, 12, 4, 5, 2, "nchw", dtype)


def test_matches_torchvision():
    tv = pytest.importorskip("torchvision.models.shufflenetv2")
    x = rand(2, 12, 5, 5)
    assert torch.equal(ops.channel_shuffle(x, 3), tv.channel_shuffle(x, 3))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), per=st.integers(1, 12), groups=st.integers(1, 6), h=st.integers(1, 9),
       w=st.integers(1, 9), fmt=st.sampled_from(FORMATS))
def test_property_cpu(n, per, groups, h, w, fmt):
    from conftest import Impl
    impl = Impl("cpu", "cpu")
    if impl.why_skip():
        pytest.skip(impl.why_skip())
    with fastzoo.backend("cpu"):
        run_case(impl, n, per * groups, h, w, groups, fmt)
