"""Pre-activation ResNet V2 against timm's resnetv2_50 / 101 / 152: state_dicts load unchanged, same logits on
the reference and the fused backend; the big variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


def assert_same_structure(fz, oracle):
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}


@pytest.fixture(scope="module")
def resnetv2_50():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("resnetv2_50", num_classes=10)).eval()
    return create_model("resnetv2_50", weights=oracle.state_dict(), num_classes=10).eval(), oracle


def test_same_logits_as_timm(resnetv2_50, monkeypatch):
    fz, oracle = resnetv2_50
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 67, 53))
    calls = fused_calls(fz, x, monkeypatch)
    assert calls["pwconv_bn_act"] == 2 * 16 + 1  # conv1 and conv3 of the 16 blocks, the stride-1 projection


def test_train_mode_matches(resnetv2_50):
    fz, oracle = resnetv2_50
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:1])


@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_drop_path_matches_timm(rate):
    """Same schedule as timm (linear over the 16 blocks), same per-sample draws with the same seed; 1.0 drops
    every sample's residual branch in the last block."""
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("resnetv2_50", num_classes=10, drop_path_rate=rate))
    fz = create_model("resnetv2_50", weights=oracle.state_dict(), num_classes=10, drop_path_rate=rate)
    blocks = [b for s in fz.stages for b in s.blocks]
    want = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0
            for s in oracle.stages for b in s.blocks]
    assert [b.drop_path_rate for b in blocks] == pytest.approx(want) and want[-1] == pytest.approx(rate)
    x = torch.randn(8, 3, 32, 32)
    fz.train(), oracle.train()
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        got = fz(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(got, oracle(x), rtol=1e-4, atol=1e-4)
        outs.append(got)
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)  # same seed: same drops
    assert (outs[0] - outs[2]).abs().amax(1).gt(1e-3).any()  # another seed: other samples dropped
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:2])  # eval mode: no drop, the fused path


@pytest.mark.parametrize("name", ["resnetv2_101", "resnetv2_152"])
def test_structure_matches_timm(name):
    with torch.device("meta"):
        assert_same_structure(create_model(name), timm.create_model(name))


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("resnetv2_50", in_chans=1, num_classes=7)
    assert m.stem.conv.in_channels == 1 and m.head.fc.out_channels == 7
    assert all(b.drop_path_rate == 0.0 for s in m.stages for b in s.blocks)
    assert {"resnetv2_50", "resnetv2_101", "resnetv2_152"} <= set(list_models("resnetv2_*"))
