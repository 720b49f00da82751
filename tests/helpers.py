"""Shared test helpers: random inputs in every memory format, the oracle in float64, tolerances by dtype."""
import contextlib

import torch

import fastzoo
from fastzoo.memory_format import suggest_memory_format

TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 2e-2, torch.float16: 5e-3}
FORMATS = ("nchw", "channels_last", "strided")


@contextlib.contextmanager
def num_threads(n):
    """torch's intra-op threads set to n inside the block, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def layout(x, fmt):
    """x in a memory format: contiguous NCHW, channels_last, or a non-contiguous strided view."""
    if fmt == "nchw":
        return x.contiguous()
    if fmt == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if fmt == "strided":  # every other column of a wider tensor: no layout fast path applies
        wide = torch.randn(*x.shape[:3], x.shape[3] * 2, dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        view = wide[..., ::2]
        assert view.stride(3) == 2  # (a degenerate shape, W == 1, may still count as contiguous)
        return view
    raise ValueError(fmt)


def rand(*shape, dtype=torch.float32, device="cpu", low=-1.0, high=1.0):
    return (torch.rand(*shape, dtype=torch.float64) * (high - low) + low).to(device=device, dtype=dtype)


def bn_vectors(c, device="cpu", dtype=torch.float32):
    """A folded BN: scale in [0.5, 1.5], shift in [-0.5, 0.5] (never zero, never trivial)."""
    return rand(c, dtype=dtype, device=device, low=0.5, high=1.5), rand(c, dtype=dtype, device=device, low=-0.5, high=0.5)


def oracle(name, *args):
    """The reference op computed in float64 from the same inputs."""
    up = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    with fastzoo.backend("reference"):
        return getattr(fastzoo.reference, name)(*up)


def poison(device, numel):
    """Fill freed allocator memory with NaN so that an output the kernel leaves partly unwritten is
    likely to land on it (allocators reuse freed blocks of the same size) and be caught."""
    blocks = [torch.full((numel,), float("nan"), device=device) for _ in range(4)]
    del blocks


def check_close(actual, expected, dtype):
    assert actual.dtype == dtype, f"output dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"output shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), "NaN in the output (an element the kernel did not write?)"
    tol = TOL[dtype]
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=tol, atol=tol * max(scale, 1.0))


def expected_format(x, y):
    """The output keeps the input's memory format."""
    if suggest_memory_format(x) == torch.channels_last and y.shape[1] > 1 and y.shape[2] * y.shape[3] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), "channels_last in, not channels_last out"
    else:
        assert y.is_contiguous(), "NCHW in, not contiguous NCHW out"
