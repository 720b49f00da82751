"""DenseNet against torchvision (densenet121/161/169/201, and torchvision's DenseNet class with the paper's
DenseNet-264 table) and timm (densenet264d): state_dicts load unchanged, same logits on the reference and the
fused backend; the big variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _same_structure(fz, oracle):
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}


def test_densenet121_same_logits_as_torchvision():
    torch.manual_seed(0)
    oracle = randomize_bn(tvm.densenet121(num_classes=10)).eval()
    fz = create_model("densenet121", weights=oracle.state_dict(), num_classes=10).eval()
    assert_same_logits(fz, oracle, torch.randn(1, 3, 67, 53))
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["densenet161", "densenet169", "densenet201"])
def test_structure_matches_torchvision(name):
    with torch.device("meta"):
        _same_structure(create_model(name), getattr(tvm, name)())


def test_densenet264_is_the_papers_table():
    with torch.device("meta"):
        fz = create_model("densenet264")
        _same_structure(fz, tvm.DenseNet(32, (6, 12, 64, 48), 64))
    assert round(count_params(fz) / 1e6, 1) == 33.3  # DenseNet-264 (k=32): 33.3M parameters


def test_densenet264d_matches_timm():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        _same_structure(create_model("densenet264d"), timm.create_model("densenet264d"))
    # deep stem and timm's layout through a forward on a narrow stand-in of the same builder
    from fastzoo.models.densenet import DenseNet
    oracle = randomize_bn(timm.models.densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), stem_type="deep",
                                                        num_classes=10)).eval()
    fz = DenseNet(8, (2, 2, 2, 2), deep_stem=True, num_classes=10).eval()
    fz.load_state_dict(oracle.state_dict())
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64))
