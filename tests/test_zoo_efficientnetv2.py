"""EfficientNetV2 S / M / L against torchvision efficientnet_v2_* (state_dicts load unchanged) and timm
efficientnetv2_s (through the order remap): same logits on the reference and the fused backend (fused_mbconv,
mbconv with SE, pw conv + BN + act); M and L compare parameter counts, keys and shapes (built on the meta
device), M also logits at a tiny size."""

import pytest
import torch
from torch import nn

import fastzoo
from fastzoo.layers import FusedMBConv, MBConv
from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

tvm = pytest.importorskip("torchvision.models")


@pytest.mark.parametrize("name,size", [("efficientnet_v2_s", (1, 3, 97, 83)), ("efficientnet_v2_m", (1, 3, 32, 32))])
def test_same_logits_as_torchvision(name, size):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, name)(num_classes=10)).eval()
    fz = create_model(name, weights=oracle.state_dict(), num_classes=10)
    assert count_params(fz) == count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(*size))
    if name == "efficientnet_v2_s":
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("name", ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"])
def test_keys_shapes_and_settings_as_torchvision(name):
    with torch.device("meta"):
        oracle, fz = getattr(tvm, name)(), create_model(name)
    assert count_params(fz) == count_params(oracle)
    assert [(k, v.shape) for k, v in fz.state_dict().items()] == [(k, v.shape) for k, v in oracle.state_dict().items()]
    bn = oracle.features[0][1]
    assert (fz.features[0].bn.eps, fz.features[0].bn.momentum) == (bn.eps, bn.momentum)
    assert fz.classifier[0].p == oracle.classifier[0].p
    want = [m.stochastic_depth.p for m in oracle.modules() if hasattr(m, "stochastic_depth")]
    assert [m.drop_path_rate for m in fz.modules() if isinstance(m, (MBConv, FusedMBConv))] == pytest.approx(want)


def test_same_logits_as_timm():
    """timm's efficientnetv2_s (non-TF: symmetric padding, BN eps 1e-5). With random weights this 40-block net
    amplifies float rounding chaotically (two correct implementations differ by 1e-2 at 64x64), so the residual
    branches are damped: their last BN's gamma scaled by 0.1."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("efficientnetv2_s")).eval()
    for m in oracle.modules():
        if getattr(m, "has_skip", False):
            bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
            bns[-1].weight.data.mul_(0.1)
    fz = create_model("efficientnetv2_s", weights=oracle.state_dict())
    assert fz.features[0].bn.eps == 1e-5
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64))


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.efficientnetv2_s(), torch.randn(1, 3, 32, 32), monkeypatch)
    # stem + 10 Fused-MBConv
    assert calls == {"fused_mbconv": 1 + 10, "mbconv": 30, "pwconv_bn_act": 1 + 1, "global_avg_pool": 1}


def test_bad_keys_name_the_key():
    sd = fastzoo.efficientnetv2_s(num_classes=10).state_dict()
    missing = dict(sd)
    del missing["features.2.0.block.1.1.weight"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): features\.2\.0\.block\.1\.1\.weight"):
        fastzoo.efficientnetv2_s(num_classes=10, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): classifier\.2\.weight"):
        fastzoo.efficientnetv2_s(num_classes=10, weights={**sd, "classifier.2.weight": torch.zeros(1)})


def test_registry():
    assert fastzoo.list_models("efficientnetv2_*") == ["efficientnetv2_l", "efficientnetv2_m", "efficientnetv2_s"]
    assert fastzoo.models.canonical_name("efficientnet_v2_m") == "efficientnetv2_m"
