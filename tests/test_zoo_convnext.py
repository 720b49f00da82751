"""ConvNeXt against torchvision (state_dicts load unchanged) and timm (through the key remap): same logits on
the reference and the fused backend; the big variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params

tvm = pytest.importorskip("torchvision.models")


def _randomize_layer_scale(model):
    """layer_scale starts at 1e-6, which would hide the blocks: make it O(1)."""
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith("layer_scale") or name.endswith("gamma"):
            p.data.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model


def test_convnext_tiny_same_logits_as_torchvision():
    torch.manual_seed(0)
    oracle = _randomize_layer_scale(tvm.convnext_tiny(num_classes=10)).eval()
    fz = create_model("convnext_tiny", weights=oracle.state_dict(), num_classes=10).eval()
    assert count_params(fz) == count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64))
    assert_same_logits(fz, oracle, torch.randn(1, 3, 67, 53).contiguous(memory_format=torch.channels_last))
    fz.train(), oracle.train()  # stochastic depth off for the comparison
    for m in oracle.modules():
        if type(m).__name__ == "StochasticDepth":
            m.p = 0.0
    for m in fz.modules():
        if hasattr(m, "drop_path_rate"):
            m.drop_path_rate = 0.0
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)


def test_convnext_tiny_takes_timm_weights():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    oracle = _randomize_layer_scale(timm.create_model("convnext_tiny", num_classes=10)).eval()
    fz = create_model("convnext_tiny", weights=oracle.state_dict(), num_classes=10).eval()
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_structure_matches_torchvision(size):
    with torch.device("meta"):
        fz, oracle = create_model(f"convnext_{size}"), getattr(tvm, f"convnext_{size}")()
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}
