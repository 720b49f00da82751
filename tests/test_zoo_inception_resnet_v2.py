"""Inception-ResNet-v2 against timm: state_dict loads unchanged, same logits on the reference and the fused
backend (at the smallest input, 75x75), in eval and train mode."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("inception_resnet_v2", num_classes=10)).eval()
    return create_model("inception_resnet_v2", weights=oracle.state_dict(), num_classes=10).eval(), oracle


def test_same_logits_as_timm(pair, monkeypatch):
    fz, oracle = pair
    assert count_params(fz) == count_params(oracle)
    x = torch.randn(1, 3, 75, 75)
    assert_same_logits(fz, oracle, x)
    calls = fused_calls(fz, x, monkeypatch)
    assert calls["pwconv_bn_act"] >= 40  # at least the 40 residual up-projections


def test_train_mode_matches(pair):
    fz, oracle = pair
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 75, 75)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, torch.randn(1, 3, 83, 79))


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("inception_resnet_v2", in_chans=1, num_classes=7)
    assert m.conv2d_1a.conv.in_channels == 1 and m.classif.out_features == 7
    assert "inception_resnet_v2" in list_models("inception_resnet*")
