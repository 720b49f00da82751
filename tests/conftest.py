"""Test set-up: Triton runs under its CPU interpreter when no GPU is visible (set before triton is
imported), and the `impl` fixture runs a test on every backend this machine can execute."""
import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastzoo  # noqa: E402
from fastzoo import _ext, backends  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


class Impl:
    """A backend to test: its name, the device its tensors live on, and set-up (the CPU kernels'
    shared-math path is the math the CUDA kernels run)."""

    def __init__(self, name, device, shared_math=False):
        self.name, self.device, self.shared_math = name, device, shared_math

    def __repr__(self):
        if self.shared_math:
            return f"{self.name}-shared-math"
        if self.name == "triton":
            return "triton-gpu" if self.device == "cuda" else "triton-interpret"
        return self.name

    def why_skip(self):
        if self.device == "cuda" and not HAS_GPU:
            return "no CUDA device"
        return backends.unavailable_reason(self.name, self.device)


IMPLS = [
    Impl("reference", "cpu"),
    Impl("cpu", "cpu"),
    Impl("cpu", "cpu", shared_math=True),
    Impl("triton", "cuda" if HAS_GPU else "cpu"),
    Impl("cuda", "cuda"),
]


def _param(impl):
    marks = [pytest.mark.gpu] if impl.device == "cuda" else []
    return pytest.param(impl, id=repr(impl), marks=marks)


@pytest.fixture(params=[_param(i) for i in IMPLS])
def impl(request):
    """Runs the test body with the backend selected (fastzoo.backend) and yields the Impl."""
    i = request.param
    why = i.why_skip()
    if why:
        pytest.skip(why)
    if i.shared_math:
        _ext._C.set_cpu_fastpath(False)
    try:
        with fastzoo.backend(i.name):
            yield i
    finally:
        if i.shared_math:
            _ext._C.set_cpu_fastpath(True)
