"""ConvMixer against timm: state_dicts load unchanged, same logits on the reference and the fused backend;
the big variants by parameter count and state_dict layout."""
import pytest
import torch

from fastzoo.models import create_model, list_models
from zoo_helpers import assert_same_logits, count_params, fused_calls, randomize_bn

timm = pytest.importorskip("timm")


def _pair(name, timm_name=None, **kw):
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model(timm_name or name, **kw)).eval()
    return create_model(name, weights=oracle.state_dict(), **kw).eval(), oracle


@pytest.mark.parametrize("name,timm_name", [("convmixer_768_32", None),
                                            ("convmixer_1024_20", "convmixer_1024_20_ks9_p14")])
def test_same_logits_as_timm(name, timm_name, monkeypatch):
    fz, oracle = _pair(name, timm_name, num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    assert_same_logits(fz, oracle, x)
    calls = fused_calls(fz, x, monkeypatch)
    depth = len(fz.blocks)
    assert calls["dwconv_bn_act"] == depth and calls["pwconv_bn_act"] == depth + 1  # and the head


def test_structure_matches_timm():
    with torch.device("meta"):
        fz, oracle = create_model("convmixer_1536_20"), timm.create_model("convmixer_1536_20")
    assert count_params(fz) == count_params(oracle)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("convmixer_1024_20_ks9_p14", in_chans=1, num_classes=7)
    assert m.stem[0].in_channels == 1 and m.head.out_features == 7
    assert {"convmixer_768_32", "convmixer_1024_20", "convmixer_1536_20"} <= set(list_models("convmixer*"))
