"""SE-ResNet / SE-ResNeXt against timm (seresnet*, seresnext*): timm's state_dicts load unchanged (its ResNet
layout with se.fc1 / se.fc2), same logits on the reference and the fused backend."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, randomize_bn

timm = pytest.importorskip("timm")


def _pair(name, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model(name, **kw)).eval()
    return create_model(name, weights=oracle.state_dict(), **kw).eval(), oracle


@pytest.mark.parametrize("name", ["seresnet18", "seresnet50", "seresnext50_32x4d"])
def test_same_logits_as_timm(name):
    fz, oracle = _pair(name)
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    if name == "seresnet18":
        assert_same_logits(fz, oracle, torch.randn(1, 3, 53, 67).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("name", ["seresnet34", "seresnet101", "seresnet152", "seresnext101_32x4d",
                                  "seresnext101_32x8d"])
def test_structure_matches_timm(name):
    with torch.device("meta"):
        fz, oracle = create_model(name), timm.create_model(name)
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}
