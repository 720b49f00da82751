"""Xception against timm's legacy_xception: state_dict loads unchanged, same logits on the reference and the
fused backend, in eval and train mode."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("legacy_xception", num_classes=10)).eval()
    return create_model("xception", weights=oracle.state_dict(), num_classes=10).eval(), oracle


def test_same_logits_as_timm(pair, monkeypatch):
    fz, oracle = pair
    assert count_params(fz) == count_params(oracle)
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    calls = fused_calls(fz, x, monkeypatch)
    assert calls["dwconv_bn_act"] == 34 and calls["pwconv_bn_act"] == 34 + 1  # every separable conv, fc


def test_odd_size_and_train_mode(pair):
    fz, oracle = pair
    assert_same_logits(fz, oracle, torch.randn(1, 3, 71, 67))
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:1])


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("legacy_xception", in_chans=1, num_classes=7)
    assert m.conv1.in_channels == 1 and m.fc.out_features == 7
    assert "xception" in list_models("xception*")
