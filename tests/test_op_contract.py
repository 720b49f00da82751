"""What every op owes torch.library and autograd, on every backend: opcheck (schema, fake kernel,
autograd registration, AOT dispatch), gradcheck in float64, and empty batches."""
import pytest
import torch

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
