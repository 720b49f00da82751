"""ShuffleNetV2 against torchvision shufflenet_v2_*: state_dicts load unchanged, same logits on the reference
and the fused backend (dw / pw conv + BN + act, channel_shuffle)."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _pair(width, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, f"shufflenet_v2_{width}")(**kw)).eval()
    return create_model(f"shufflenetv2_{width}", weights=oracle.state_dict(), **kw).eval(), oracle


@pytest.mark.parametrize("width", ["x0_5", "x1_0", "x1_5", "x2_0"])
def test_same_logits_as_torchvision(width):
    fz, oracle = _pair(width)
    assert count_params(fz) == count_params(oracle)
    if width == "x1_0":
        assert_same_logits(fz, oracle, torch.randn(1, 3, 67, 53))
        assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    else:
        assert_same_logits(fz, oracle, torch.randn(1, 3, 32, 32))


def test_train_mode_matches():
    fz, oracle = _pair("x0_5", num_classes=10)
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
