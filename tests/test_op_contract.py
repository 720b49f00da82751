"""What every op owes torch.library and autograd, on every backend: opcheck (schema, fake kernel,
autograd registration, AOT dispatch), gradcheck in float64, empty batches, and (C++ backends) the same dispatch
through fastzoo.ops as through torch.ops."""
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastzoo import ops
from helpers import check_close, oracle
from op_samples import sample

OPS = ops.OP_NAMES


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_opcheck(impl, name, fmt):
    if impl.name == "reference":
        pytest.skip("the reference backend is plain PyTorch, not a registered op")
    args = sample(name, impl.device, fmt=fmt)
    torch.library.opcheck(ops.implementation(name, impl.device), args)


@pytest.mark.parametrize("name", OPS)
def test_gradcheck(impl, name):
    """The autograd formula against finite differences, through the backend's forward."""
    if impl.name == "triton":
        pytest.skip("triton kernels take fp32/fp16/bf16; gradcheck needs float64")
    args = sample(name, impl.device, torch.float64, grad=True)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def f(*ts):
        full = list(args)
        for i, t in zip(tensors, ts):
            full[i] = t
        return getattr(ops, name)(*full)

    # fast_mode checks random projections of the Jacobian: the full one takes minutes per op here
    assert torch.autograd.gradcheck(f, tuple(args[i] for i in tensors), atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("name", OPS)
def test_backward_matches_reference_autograd(impl, name):
    """Gradients through the fused op equal PyTorch autograd through the reference, in float32."""
    args = sample(name, impl.device, grad=True)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    out = getattr(ops, name)(*args)
    gy = torch.randn_like(out)
    got = torch.autograd.grad(out, tensors, gy)
    from fastzoo import reference
    want = torch.autograd.grad(getattr(reference, name)(*args), tensors, gy)
    for g, w in zip(got, want):
        check_close(g, w, torch.float32)


@pytest.mark.parametrize("name", OPS)
def test_empty_batch(impl, name):
    args = sample(name, impl.device, n=0)
    out = getattr(ops, name)(*args)
    assert out.shape[0] == 0
    assert out.shape[1:] == oracle(name, *sample(name, impl.device, n=1)).shape[1:]


class _LogDispatch(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class _LogFunction(torch.Tensor):
    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", OPS)
def test_cpp_backends_keep_torch_ops_dispatch(impl, name):
    """fastzoo.ops calls the C++ and CUDA kernels through the C++ dispatcher (fastzoo._C.ops), not torch.ops'
    Python path: the same result as torch.ops.fastzoo.<op>, and dispatch modes, __torch_function__ subclasses,
    the profiler and torch.jit.trace still see the op."""
    if impl.name not in ("cpu", "cuda"):
        pytest.skip("the C++ backends' entry")
    args = sample(name, impl.device)
    op = getattr(torch.ops.fastzoo, name).default
    assert torch.equal(getattr(ops, name)(*args), op(*args))
    with _LogDispatch() as mode:
        getattr(ops, name)(*args)
    assert op in mode.seen
    _LogFunction.seen.clear()
    getattr(ops, name)(args[0].as_subclass(_LogFunction), *args[1:])
    assert op in _LogFunction.seen
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        getattr(ops, name)(*args)
    assert f"fastzoo::{name}" in {e.name for e in prof.events()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated, still used
        traced = torch.jit.trace(lambda x: getattr(ops, name)(x, *args[1:]), (args[0],))
    assert f"fastzoo::{name}" in {n.kind() for n in traced.graph.nodes()}
