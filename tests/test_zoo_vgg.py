"""VGG (with and without BN), AlexNet and SqueezeNet against torchvision: state_dicts load unchanged, same
logits on the reference and the fused backend; the big VGGs by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _pair(name, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(getattr(tvm, name)(**kw)).eval()
    return create_model(name, weights=oracle.state_dict(), **kw).eval(), oracle


@pytest.mark.parametrize("name,size", [("vgg11", (64, 64)), ("vgg11_bn", (67, 53)), ("alexnet", (71, 64)),
                                       ("squeezenet1_0", (64, 64)), ("squeezenet1_1", (67, 53))])
def test_same_logits_as_torchvision(name, size):
    fz, oracle = _pair(name, num_classes=10)
    assert_same_logits(fz, oracle, torch.randn(1, 3, *size))
    if name == "squeezenet1_1":
        assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("name", ["vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"])
def test_structure_matches_torchvision(name):
    with torch.device("meta"):
        fz, oracle = create_model(name), getattr(tvm, name)()
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}
