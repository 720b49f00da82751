"""MnasNet-B1 0_5 / 0_75 / 1_0 / 1_3 against torchvision mnasnet* (state_dicts load unchanged) and timm
mnasnet_100 (through the order remap): same logits on the reference and the fused backend (mbconv; the flat
stem and head runs as dw / pw conv + BN + act)."""

import pytest
import torch

import fastzoo
from fastzoo.models import create_model
from fastzoo.models._common import set_bn
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

tvm = pytest.importorskip("torchvision.models")


@pytest.mark.parametrize("name", ["mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"])
def test_same_logits_as_torchvision(name):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, name)(num_classes=10)).eval()
    fz = create_model(name, weights=oracle.state_dict(), num_classes=10)
    assert count_params(fz) == count_params(oracle)
    x = torch.randn(1, 3, 97, 83) if name == "mnasnet1_0" else torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    if name == "mnasnet1_0":
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


def test_same_logits_as_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("mnasnet_100")).eval()
    fz = create_model("mnasnet_100", weights=oracle.state_dict())
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83))


def test_train_mode_matches_torchvision():
    torch.manual_seed(0)
    oracle = randomize_bn(tvm.mnasnet0_5(num_classes=10, dropout=0.0))
    fz = fastzoo.mnasnet0_5(weights=oracle.state_dict(), num_classes=10, dropout=0.0, in_chans=3)
    set_bn(fz, momentum=0.5), set_bn(oracle, momentum=0.5)  # MnasNet's 3e-4 would barely move the statistics
    x = torch.randn(2, 3, 32, 32)
    with fastzoo.backend("auto"):
        assert_same_logits(fz, oracle, x)  # eval folds BN once (cached) ...
        torch.testing.assert_close(fz.train()(x), oracle.train()(x), rtol=1e-4, atol=1e-4)
        assert_same_logits(fz, oracle, x)  # ... and refolds after train mode moved the running statistics
    assert fastzoo.mnasnet0_5(in_chans=1, num_classes=3).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.mnasnet0_5(), torch.randn(1, 3, 32, 32), monkeypatch)
    # 16 inverted residuals; the stem's separable dw and pw, the 1x1 head
    assert calls == {"mbconv": 16, "dwconv_bn_act": 1, "pwconv_bn_act": 2 + 1}


def test_bad_keys_name_the_key():
    sd = fastzoo.mnasnet0_5(num_classes=10).state_dict()
    missing = dict(sd)
    del missing["layers.9.1.layers.4.weight"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): layers\.9\.1\.layers\.4\.weight"):
        fastzoo.mnasnet0_5(num_classes=10, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): layers\.17\.weight"):
        fastzoo.mnasnet0_5(num_classes=10, weights={**sd, "layers.17.weight": torch.zeros(1)})


def test_registry_aliases():
    assert fastzoo.list_models("mnasnet*") == ["mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"]
    assert fastzoo.models.canonical_name("mnasnet_100") == "mnasnet1_0"
