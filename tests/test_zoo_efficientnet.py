"""EfficientNet B0-B7 against torchvision efficientnet_b* (state_dicts load unchanged) and timm efficientnet_b*
(through the order remap): same logits on the reference and the fused backend (mbconv with SE, pw conv + BN +
act); every variant compares parameter counts, keys, shapes, BN settings and stochastic-depth rates (built on
the meta device); B0, B3 and B5 (at a tiny size) also logits."""

import pytest
import torch

import fastzoo
from fastzoo.layers import MBConv
from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _pair(name, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, name)(**kw)).eval()
    return create_model(name, weights=oracle.state_dict(), **kw).eval(), oracle


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", "efficientnet_b5"])
def test_same_logits_as_torchvision(name):
    fz, oracle = _pair(name, num_classes=10)
    assert count_params(fz) == count_params(oracle)
    if name == "efficientnet_b0":
        assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83))
        assert_same_logits(fz, oracle, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    else:
        assert_same_logits(fz, oracle, torch.randn(1, 3, 33, 33))


@pytest.mark.parametrize("name", [f"efficientnet_b{i}" for i in range(8)])
def test_keys_shapes_and_settings_as_torchvision(name):
    with torch.device("meta"):
        oracle, fz = getattr(tvm, name)(), create_model(name)
    assert count_params(fz) == count_params(oracle)
    assert [(k, v.shape) for k, v in fz.state_dict().items()] == [(k, v.shape) for k, v in oracle.state_dict().items()]
    bn = oracle.features[0][1]
    assert (fz.features[0].bn.eps, fz.features[0].bn.momentum) == (bn.eps, bn.momentum)
    assert fz.classifier[0].p == oracle.classifier[0].p
    want = [m.stochastic_depth.p for m in oracle.modules() if hasattr(m, "stochastic_depth")]
    assert [m.drop_path_rate for m in fz.modules() if isinstance(m, MBConv)] == pytest.approx(want)


def test_same_logits_as_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("efficientnet_b0")).eval()
    fz = create_model("efficientnet_b0", weights=oracle.state_dict())
    assert_same_logits(fz, oracle, torch.randn(1, 3, 97, 83))


def test_drop_path_in_train_mode():
    assert fastzoo.efficientnet_b0(drop_path_rate=0.4).features[7][0].drop_path_rate == pytest.approx(0.4 * 15 / 16)
    block = fastzoo.efficientnet_b0(num_classes=10).features[2][1]  # 24 -> 24, stride 1: residual
    block.drop_path_rate = 0.5
    x = torch.randn(64, 24, 4, 4)
    with torch.no_grad():
        y = block.train()(x)
        branch = block.block(x)
    dropped = (y - x).flatten(1).abs().amax(1) == 0  # stochastic depth per sample: x + 0, or x + branch / 0.5
    assert 8 < int(dropped.sum()) < 56
    torch.testing.assert_close(y[~dropped], x[~dropped] + 2 * branch[~dropped])
    assert torch.equal(block.eval()(x[:2]), block.eval()(x[:2]))  # no drop path in eval
    assert fastzoo.efficientnet_b0(in_chans=1, num_classes=3).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_eval_runs_fused_ops(monkeypatch):
    calls = fused_calls(fastzoo.efficientnet_b0(), torch.randn(1, 3, 32, 32), monkeypatch)
    # stem, 16 MBConv (SE inside), 1x1 head, pool, fc
    assert calls == {"fused_mbconv": 1, "mbconv": 16, "pwconv_bn_act": 2, "global_avg_pool": 1}


def test_bad_keys_name_the_key():
    sd = fastzoo.efficientnet_b0(num_classes=10).state_dict()
    missing = dict(sd)
    del missing["features.2.1.block.2.fc1.bias"]
    with pytest.raises(KeyError, match=r"missing keys \(1\): features\.2\.1\.block\.2\.fc1\.bias"):
        fastzoo.efficientnet_b0(num_classes=10, weights=missing)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\): features\.9\.weight"):
        fastzoo.efficientnet_b0(num_classes=10, weights={**sd, "features.9.weight": torch.zeros(1)})


def test_registry():
    assert fastzoo.list_models("efficientnet_b*") == [f"efficientnet_b{i}" for i in range(8)]
