"""MobileNetV1 against timm mobilenetv1_100 / mobilenetv1_125 (through the order remap): same logits on the
reference and the fused backend (dw and pw conv + BN + act)."""

import pytest
import torch

import fastzoo
from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("timm_name,width_mult", [("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)])
def test_same_logits_as_timm(timm_name, width_mult):
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model(timm_name, num_classes=10)).eval()
    fz = create_model("mobilenetv1", weights=oracle.state_dict(), width_mult=width_mult, num_classes=10)
    assert count_params(fz) == count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83) if width_mult == 1.0 else torch.randn(1, 3, 64, 64))
    if width_mult == 1.0:
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


def test_paper_parameter_count_and_options():
    # the paper's table 8: 4.2M parameters at width 1.0, 1.3M at 0.5 (ImageNet head)
    assert round(count_params(fastzoo.mobilenetv1()) / 1e6, 1) == 4.2
    assert round(count_params(fastzoo.mobilenetv1(width_mult=0.5)) / 1e6, 1) == 1.3
    m = fastzoo.mobilenetv1(in_chans=1, num_classes=3, act="relu", dropout=0.1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 3)  # train mode
    assert isinstance(m.features[1][0][2], torch.nn.ReLU) and m.classifier[0].p == 0.1


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.mobilenetv1(width_mult=0.25), torch.randn(1, 3, 32, 32), monkeypatch)
    assert calls == {"fused_mbconv": 1, "dwconv_bn_act": 13, "pwconv_bn_act": 14}  # stem, 13 separable, fc


def test_bad_keys_name_the_key():
    sd = fastzoo.mobilenetv1(width_mult=0.25).state_dict()
    missing = dict(sd)
    del missing["features.5.1.1.bias"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): features\.5\.1\.1\.bias"):
        fastzoo.mobilenetv1(width_mult=0.25, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): head\.weight"):
        fastzoo.mobilenetv1(width_mult=0.25, weights={**sd, "head.weight": torch.zeros(1)})


def test_registry():
    assert fastzoo.models.canonical_name("mobilenetv1_100") == "mobilenetv1"
