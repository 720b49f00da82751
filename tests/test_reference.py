"""L0: the reference ops against plain torch compositions with unfolded BatchNorm (F.batch_norm on running
statistics), activation modules, and mean + linear for SE. Also: fastzoo runs without triton installed."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fastzoo import reference
from fastzoo.layers import fold_bn

ACT_MODULES = {"identity": torch.nn.Identity(), "relu": torch.nn.ReLU(), "relu6": torch.nn.ReLU6(),
               "hardswish": torch.nn.Hardswish(), "hardsigmoid": torch.nn.Hardsigmoid(), "silu": torch.nn.SiLU(),
               "sigmoid": torch.nn.Sigmoid(), "gelu": torch.nn.GELU()}


def random_bn(c):
    bn = torch.nn.BatchNorm2d(c, eps=1e-3).eval()
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 1.5)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def plain_bn(z, bn):
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("act", sorted(ACT_MODULES))
@pytest.mark.parametrize("k,stride", [(3, 1), (5, 2), (7, 1), (9, 2)])
def test_dwconv_reference_is_conv_bn_act(act, k, stride):
    x, w, bn = torch.randn(2, 12, 11, 10), torch.randn(12, 1, k, k), random_bn(12)
    want = ACT_MODULES[act](plain_bn(F.conv2d(x, w, None, stride, k // 2, 1, 12), bn))
    torch.testing.assert_close(reference.dwconv_bn_act(x, w, *fold_bn(bn), stride, -1, act), want)


@pytest.mark.parametrize("act", ["relu", "hardswish", "identity"])
def test_pwconv_reference_is_conv_bn_add_act(act):
    x, w, bn, r = torch.randn(2, 12, 5, 6), torch.randn(20, 12, 1, 1), random_bn(20), torch.randn(2, 20, 5, 6)
    want = ACT_MODULES[act](plain_bn(F.conv2d(x, w), bn) + r)
    torch.testing.assert_close(reference.pwconv_bn_act(x, w, *fold_bn(bn), act, r), want)


def test_squeeze_excite_reference_is_mean_linear():
    x = torch.randn(3, 16, 7, 5)
    w1, b1, w2, b2 = torch.randn(4, 16), torch.randn(4), torch.randn(16, 4), torch.randn(16)
    gate = torch.sigmoid(F.linear(F.silu(F.linear(x.mean((2, 3)), w1, b1)), w2, b2))
    torch.testing.assert_close(reference.squeeze_excite(x, w1, b1, w2, b2, "silu", "sigmoid"), x * gate[:, :, None, None])


def test_channel_shuffle_reference_by_index():
    x = torch.randn(2, 12, 3, 4)
    y = reference.channel_shuffle(x, 3)
    for co in range(12):
        assert torch.equal(y[:, co], x[:, (co % 3) * 4 + co // 3])


def test_runs_without_triton():
    """fastzoo imports and runs its CPU ops with triton absent (sys.modules entry None blocks the import)."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, fastzoo\n"
            "x = torch.randn(1, 8, 5, 5)\n"
            "y = fastzoo.ops.dwconv_bn_act(x, torch.randn(8, 1, 3, 3), torch.ones(8), torch.zeros(8))\n"
            "assert y.shape == (1, 8, 5, 5)\n"
            "print(fastzoo.backends.unavailable_reason('triton', 'cuda'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "triton is not installed" in r.stdout
