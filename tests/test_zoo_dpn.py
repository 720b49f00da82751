"""DPN against timm: state_dicts load unchanged, same logits on the reference and the fused backend; the
bigger variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


def assert_same_structure(fz, oracle):
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}


@pytest.fixture(scope="module")
def dpn92():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("dpn92", num_classes=10)).eval()
    return create_model("dpn92", weights=oracle.state_dict(), num_classes=10).eval(), oracle


def test_same_logits_as_timm(dpn92, monkeypatch):
    fz, oracle = dpn92
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 61, 67))
    calls = fused_calls(fz, x, monkeypatch)
    assert calls["pwconv_bn_act"] >= 2 * 30  # c1x1_a and c1x1_c of each of the 30 blocks


def test_train_mode_matches(dpn92):
    fz, oracle = dpn92
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:1])


@pytest.mark.parametrize("name", ["dpn98", "dpn131"])
def test_structure_matches_timm(name):
    with torch.device("meta"):
        assert_same_structure(create_model(name), timm.create_model(name))


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("dpn92", in_chans=1, num_classes=7)
    assert m.features.conv1_1.conv.in_channels == 1 and m.classifier.out_channels == 7
    assert {"dpn92", "dpn98", "dpn131"} <= set(list_models("dpn*"))
