"""ResNet / ResNeXt / Wide ResNet against torchvision: state_dicts load unchanged, same logits on the
reference and the fused backend; the big variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _pair(name, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, name)(**kw)).eval()
    return create_model(name, weights=oracle.state_dict(), **kw).eval(), oracle


def assert_same_structure(fz, oracle):
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}


@pytest.fixture(scope="module")
def resnet18():
    return _pair("resnet18", num_classes=10)


def test_resnet18_odd_size_and_channels_last(resnet18):
    assert_same_logits(*resnet18, torch.randn(1, 3, 67, 53))
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    assert_same_logits(*resnet18, x)


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_same_logits_as_torchvision(name):
    assert_same_logits(*_pair(name), torch.randn(1, 3, 64, 64))


def test_train_mode_matches(resnet18):
    fz, oracle = resnet18
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:1])  # running statistics updated alike, folds refreshed


@pytest.mark.parametrize("name,rate", [("resnet50", 0.2), ("seresnet18", 1.0)])
def test_drop_path_matches_timm(name, rate):
    """drop_path_rate as timm's ResNet: the same linear per-block rates and, seeded alike, the same per-sample
    drops (Bottleneck, and BasicBlock with SE; 1.0 drops every sample in the last block)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model(name, num_classes=10, drop_path_rate=rate))
    fz = create_model(name, weights=oracle.state_dict(), num_classes=10, drop_path_rate=rate)
    blocks = [b for i in range(1, 5) for b in getattr(fz, f"layer{i}")]
    want = [b.drop_path.drop_prob if b.drop_path is not None else 0.0
            for i in range(1, 5) for b in getattr(oracle, f"layer{i}")]
    assert [b.drop_path_rate for b in blocks] == pytest.approx(want) and want[-1] == pytest.approx(rate)
    fz.train(), oracle.train()
    x = torch.randn(8, 3, 32, 32)
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        got = fz(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(got, oracle(x), rtol=1e-4, atol=1e-4)
        outs.append(got)
    assert torch.isfinite(outs[0]).all()
    assert (outs[0] - outs[1]).abs().amax(1).gt(1e-3).any()  # another seed, other samples dropped
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x[:2])  # eval mode: no drop, the fused path


@pytest.mark.parametrize("name", ["resnet34", "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2",
                                  "wide_resnet101_2"])
def test_structure_matches_torchvision(name):
    with torch.device("meta"):
        assert_same_structure(create_model(name), getattr(tvm, name)())


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("tv_resnet18", in_chans=1, num_classes=7)
    assert m.conv1.in_channels == 1 and m.fc.out_features == 7
    assert {"resnet18", "resnext50_32x4d", "wide_resnet50_2"} <= set(list_models("*res*"))
