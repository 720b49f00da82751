"""squeeze_excite on every backend against the reference (float64 oracle)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastzoo
from fastzoo import ops
from fastzoo.activations import ACTIVATIONS
from helpers import FORMATS, check_close, expected_format, layout, oracle, poison, rand


def run_case(impl, n, c, cs, h, w, act, gate, fmt, dtype=torch.float32, flat=False):
    d = impl.device
    x = layout(rand(n, c, h, w, dtype=dtype, device=d), fmt)
    w1 = rand(cs, c, dtype=dtype, device=d) if flat else rand(cs, c, 1, 1, dtype=dtype, device=d)
    w2 = rand(c, cs, dtype=dtype, device=d) if flat else rand(c, cs, 1, 1, dtype=dtype, device=d)
    b1, b2 = rand(cs, device=d), rand(c, device=d)
    poison(d, max(1, n * c * h * w))
    y = ops.squeeze_excite(x, w1, b1, w2, b2, act, gate)
    check_close(y, oracle("squeeze_excite", x, w1, b1, w2, b2, act, gate).to(dtype), dtype)
    expected_format(x, y)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act,gate", [("relu", "hardsigmoid"), ("silu", "sigmoid")])
def test_formats(impl, fmt, act, gate):
    run_case(impl, 2, 24, 8, 7, 9, act, gate, fmt)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activations(impl, act):
    run_case(impl, 1, 13, 5, 5, 6, act, act, "channels_last")


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (1, 3, 1, 1, 17), (3, 33, 9, 4, 5), (1, 96, 24, 14, 14)])
def test_edge_shapes(impl, shape):
    n, c, cs, h, w = shape
    run_case(impl, n, c, cs, h, w, "relu", "hardsigmoid", "channels_last")
    run_case(impl, n, c, cs, h, w, "silu", "sigmoid", "nchw", flat=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtypes(impl, dtype):
    if dtype == torch.float64 and impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16")
    run_case(impl, 2, 40, 10, 6, 7, "relu", "hardsigmoid", "channels_last", dtype)
    run_case(impl, 2, 40, 10, 6, 7, "silu", "sigmoid", "nchw", dtype)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 48), cs=st.integers(1, 16), h=st.integers(1, 12),
       w=st.integers(1, 12), act=st.sampled_from(ACTIVATIONS), gate=st.sampled_from(ACTIVATIONS),
       fmt=st.sampled_from(FORMATS), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_property_cpu(n, c, cs, h, w, act, gate, fmt, dtype):
    from conftest import Impl
    impl = Impl("cpu", "cpu")
    if impl.why_skip():
        pytest.skip(impl.why_skip())
    with fastzoo.backend("cpu"):
        run_case(impl, n, c, cs, h, w, act, gate, fmt, dtype)
