"""GhostNet against timm ghostnet_100 (and ghostnet_050 / _130 through width_mult), loaded through the order
remap: same logits on the reference and the fused backend (pw conv + BN + act for the ghost modules' primary
convs and the shortcut with the residual add, dw conv + BN + act for the cheap ops and stride-2 convs, SE)."""

import pytest
import torch

import fastzoo
from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, fused_calls, max_rel_err, randomize_bn

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("timm_name,width_mult", [("ghostnet_100", 1.0), ("ghostnet_050", 0.5)])
def test_same_logits_as_timm(timm_name, width_mult):
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model(timm_name, num_classes=10)).eval()
    fz = create_model("ghostnet", weights=oracle.state_dict(), width_mult=width_mult, num_classes=10)
    assert count_params(fz) == count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83) if width_mult == 1.0 else torch.randn(1, 3, 64, 64))
    if width_mult == 1.0:
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


def test_train_mode_matches_timm():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("ghostnet_050", num_classes=10, drop_rate=0.0))
    fz = fastzoo.ghostnet(weights=oracle.state_dict(), width_mult=0.5, num_classes=10, dropout=0.0)
    x = torch.randn(2, 3, 48, 48)
    assert max_rel_err(fz.train()(x), oracle.train()(x)) < 1e-4
    assert fastzoo.ghostnet(in_chans=1, num_classes=3, width_mult=0.5).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_paper_parameter_count():
    assert round(count_params(fastzoo.ghostnet()) / 1e6, 1) == 5.2  # the paper's table 7: 5.2M


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.ghostnet(width_mult=0.5), torch.randn(1, 3, 32, 32), monkeypatch)
    # 16 bottlenecks x 2 ghost modules (pw primary + dw cheap op); 4 stride-2 dw convs; 7 SE; 5 conv shortcuts
    # (dw, then pw with the residual add); the 1x1 stage conv before the head
    assert calls == {"fused_mbconv": 1, "pwconv_bn_act": 32 + 5 + 1 + 1, "dwconv_bn_act": 32 + 4 + 5, "squeeze_excite": 7}


def test_bad_keys_name_the_key():
    sd = fastzoo.ghostnet(width_mult=0.5).state_dict()
    missing = dict(sd)
    del missing["blocks.3.0.se.fc2.bias"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): blocks\.3\.0\.se\.fc2\.bias"):
        fastzoo.ghostnet(width_mult=0.5, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): head\.weight"):
        fastzoo.ghostnet(width_mult=0.5, weights={**sd, "head.weight": torch.zeros(1)})


def test_registry():
    assert fastzoo.models.canonical_name("ghostnet_100") == "ghostnet"
