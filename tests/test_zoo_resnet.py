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


@pytest.mark.parametrize("name,size", [("resnet18", (97, 83)), ("resnet50", (64, 64)),
                                       ("resnext50_32x4d", (64, 64))])
def test_same_logits_as_torchvision(name, size):
    fz, oracle = _pair(name)
    assert_same_logits(fz, oracle, torch.randn(1, 3, *size))


def test_channels_last_and_options():
    fz, oracle = _pair("resnet18", num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x.contiguous(memory_format=torch.channels_last))
    assert create_model("resnet18", in_chans=1, num_classes=7).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 7)


@pytest.mark.parametrize("name", ["resnet34", "resnet101", "resnet152", "resnext101_32x8d", "wide_resnet50_2",
                                  "wide_resnet101_2"])
def test_structure_matches_torchvision(name):
    with torch.device("meta"):
        oracle, fz = getattr(tvm, name)(), create_model(name)
    assert count_params(fz) == count_params(oracle)
    want = {k: v.shape for k, v in oracle.state_dict().items()}
    assert {k: v.shape for k, v in fz.state_dict().items()} == want


def test_train_mode_matches_and_registry():
    fz, oracle = _pair("resnet18")
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    assert {"resnet18", "resnext50_32x4d", "wide_resnet50_2"} <= set(list_models("*res*"))
    assert create_model("tv_resnet18").fc.out_features == 1000
