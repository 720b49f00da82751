"""MobileNetV2 against torchvision mobilenet_v2 (state_dicts load unchanged) and timm mobilenetv2_100 (through
the order remap): same logits on the reference and the fused backend (mbconv, pw conv + BN + act)."""

import pytest
import torch

import fastzoo
from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _pair(width_mult=1.0, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(tvm.mobilenet_v2(width_mult=width_mult, **kw)).eval()
    return create_model("mobilenet_v2", weights=oracle.state_dict(), width_mult=width_mult, **kw).eval(), oracle


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_same_logits_as_torchvision(width_mult):
    fz, oracle = _pair(width_mult, num_classes=10, dropout=0.5)
    assert count_params(fz) == count_params(oracle)
    assert fz.classifier[0].p == 0.5 and fz.classifier[1].out_features == 10
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83))
    if width_mult == 1.0:
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


def test_in_chans():
    assert fastzoo.mobilenetv2(in_chans=1, num_classes=3)(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_same_logits_as_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("mobilenetv2_100")).eval()
    fz = create_model("mobilenetv2_100", weights=oracle.state_dict())
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83))


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.mobilenetv2(), torch.randn(1, 3, 32, 32), monkeypatch)
    # stem, 17 blocks, 1x1 head, pool, fc
    assert calls == {"fused_mbconv": 1, "mbconv": 17, "pwconv_bn_act": 2, "global_avg_pool": 1}


def test_bad_keys_name_the_key():
    sd = fastzoo.mobilenetv2(num_classes=10).state_dict()
    missing = dict(sd)
    del missing["features.3.conv.1.1.running_var"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): features\.3\.conv\.1\.1\.running_var"):
        fastzoo.mobilenetv2(num_classes=10, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): features\.99\.weight"):
        fastzoo.mobilenetv2(num_classes=10, weights={**sd, "features.99.weight": torch.zeros(1)})


def test_registry_aliases():
    for name in ("mobilenetv2", "mobilenet_v2", "mobilenetv2_100"):
        assert fastzoo.models.canonical_name(name) == "mobilenetv2"
