"""NASNet-A Large against timm's nasnetalarge (state_dict loads unchanged, same logits on the reference and the
fused backend, in eval and train mode); NASNet-A Mobile against the paper (Zoph et al. 2018, Table 2: 5.3M
params, 564M mult-adds at 224) and a hand-checked cell table, built from the same cells."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastzoo
from fastzoo.models import create_model, list_models
from fastzoo.models.nasnet import NASNetA, cell_table
from zoo_helpers import assert_same_logits, count_params, fused_calls, max_rel_err, randomize_bn

timm = pytest.importorskip("timm")

# fused ops per eval-mode forward: stem0 10 dw + 11 pw, stem1 10 + 13, first cell 10 + 13, normal 10 + 12,
# reduction 10 + 12 (each of the 5 separable branches 2 dw + 2 pw; conv_1x1 / conv_prev_1x1 one pw each; the
# factorized path two pw), and the classifier (pw on 1x1)
LARGE_CALLS = {"dwconv_bn_act": 20 + 3 * 10 + 15 * 10 + 2 * 10, "pwconv_bn_act": 24 + 3 * 13 + 15 * 12 + 2 * 12 + 1}
MOBILE_CALLS = {"dwconv_bn_act": 20 + 3 * 10 + 9 * 10 + 2 * 10, "pwconv_bn_act": 24 + 3 * 13 + 9 * 12 + 2 * 12 + 1}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    oracle = randomize_bn(timm.create_model("nasnetalarge", num_classes=10)).eval()
    return create_model("nasnetalarge", weights=oracle.state_dict(), num_classes=10).eval(), oracle


def test_large_same_logits_as_timm(pair, monkeypatch):
    fz, oracle = pair
    assert fz.state_dict().keys() == oracle.state_dict().keys()
    assert count_params(fz) == count_params(oracle)
    x = torch.randn(1, 3, 32, 32)  # the smallest size worth it: 15 -> 8 -> 4 -> 2 -> 1 pixels
    assert_same_logits(fz, oracle, x)
    calls = fused_calls(fz, x, monkeypatch)
    assert {k: calls[k] for k in LARGE_CALLS} == LARGE_CALLS == {"dwconv_bn_act": 220, "pwconv_bn_act": 268}


@pytest.fixture(scope="module")
def small_pair():
    """timm's NASNet-A class at 6 @ 1056 (stem 32) and fastzoo's builder with the same description: the same
    code paths as nasnetalarge at 1/14 of its parameters, for the slower checks."""
    torch.manual_seed(0)
    oracle = randomize_bn(timm.models.nasnet.NASNetALarge(num_classes=10, stem_size=32, num_features=1056)).eval()
    fz = NASNetA(6, 1056, 32, skip_reduction_layer_input=True, num_classes=10)
    fz.load_state_dict(oracle.state_dict())
    return fz.eval(), oracle


def test_odd_size_channels_last_and_train_mode(small_pair):
    fz, oracle = small_pair
    x = torch.randn(2, 3, 35, 37)  # odd sizes: symmetric "SAME" pads, the zero row of the factorized path
    assert_same_logits(fz, oracle, x)
    assert_same_logits(fz, oracle, x.contiguous(memory_format=torch.channels_last))
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fz(x), oracle(x), rtol=1e-4, atol=1e-4)
    fz.eval(), oracle.eval()
    assert_same_logits(fz, oracle, x)  # running statistics updated the same way, folds recomputed


def test_param_counts():
    with torch.device("meta"):
        large, oracle = create_model("nasnet_large"), timm.create_model("nasnetalarge")
        mobile = create_model("nasnet_mobile")
        # timm's NASNet-A class with the mobile filters (N fixed at 6): mobile's parameters are a subset
        timm_1056 = timm.models.nasnet.NASNetALarge(stem_size=32, num_features=1056)
    assert count_params(large) == count_params(oracle) == 88_753_150
    assert count_params(mobile) == 5_289_978  # paper: 5.3M (0.2% off, the paper's rounding)
    assert abs(count_params(mobile) / 5.3e6 - 1) < 0.005
    want = {k: v.shape for k, v in timm_1056.state_dict().items()}
    got = {k: v.shape for k, v in mobile.state_dict().items()}
    extra = {k.split(".")[0] for k in set(want) - set(got)}
    assert extra == {"cell_4", "cell_5", "cell_10", "cell_11", "cell_16", "cell_17"}
    assert all(want[k] == s for k, s in got.items())


def test_mobile_mult_adds_and_shapes():
    m = create_model("nasnet_mobile").eval()
    x = torch.randn(1, 3, 224, 224)
    with fastzoo.backend("reference"), FlopCounterMode(display=False) as fc, torch.no_grad():
        y = m(x)
    assert y.shape == (1, 1000)
    mult_adds = fc.get_total_flops() / 2  # FlopCounterMode counts 2 per multiply-add; convs + the linear
    assert abs(mult_adds / 564e6 - 1) < 0.005, mult_adds  # measured 563.64M, paper 564M
    with torch.device("meta"):
        large, mobile = create_model("nasnet_large"), create_model("nasnet_mobile")
        assert large.forward_features(torch.empty(1, 3, 331, 331)).shape == (1, 4032, 11, 11)
        assert mobile.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, 1056, 7, 7)


def test_cell_table():
    # (name, kind, in_left, in_right, filters, out channels, second input), hand-checked against timm's
    # nasnetalarge constructor and Cadene's nasnetamobile (its forward: cell_6 reads cell_3, cell_12 cell_9)
    mobile = cell_table(4, 1056, 32, skip_reduction_layer_input=False)
    assert mobile == [
        ("cell_stem_0", "stem0", 32, 32, 11, 44, "conv0"),
        ("cell_stem_1", "stem1", 32, 44, 22, 88, "conv0"),
        ("cell_0", "first", 44, 88, 44, 264, "cell_stem_0"),
        ("cell_1", "normal", 88, 264, 44, 264, "cell_stem_1"),
        ("cell_2", "normal", 264, 264, 44, 264, "cell_0"),
        ("cell_3", "normal", 264, 264, 44, 264, "cell_1"),
        ("reduction_cell_0", "reduction", 264, 264, 88, 352, "cell_2"),
        ("cell_6", "first", 264, 352, 88, 528, "cell_3"),
        ("cell_7", "normal", 352, 528, 88, 528, "reduction_cell_0"),
        ("cell_8", "normal", 528, 528, 88, 528, "cell_6"),
        ("cell_9", "normal", 528, 528, 88, 528, "cell_7"),
        ("reduction_cell_1", "reduction", 528, 528, 176, 704, "cell_8"),
        ("cell_12", "first", 528, 704, 176, 1056, "cell_9"),
        ("cell_13", "normal", 704, 1056, 176, 1056, "reduction_cell_1"),
        ("cell_14", "normal", 1056, 1056, 176, 1056, "cell_12"),
        ("cell_15", "normal", 1056, 1056, 176, 1056, "cell_13"),
    ]
    large = cell_table(6, 4032, 96, skip_reduction_layer_input=True)
    kinds = [r[1] for r in large]
    assert kinds.count("first") + kinds.count("normal") == 18 and kinds.count("reduction") == 2
    assert [r[4] for r in large if r[1] in ("first", "normal")] == [168] * 6 + [336] * 6 + [672] * 6
    by_name = {r[0]: r for r in large}
    assert by_name["cell_6"][6] == "cell_4" and by_name["cell_12"][6] == "cell_10"  # skip_reduction_layer_input
    assert by_name["cell_stem_0"][4:6] == (42, 168) and by_name["cell_stem_1"][4:6] == (84, 336)
    assert by_name["reduction_cell_1"][2:6] == (2016, 2016, 672, 2688) and large[-1][5] == 4032


def test_mobile_fused_backend_and_channels_last(monkeypatch):
    torch.manual_seed(0)
    m = randomize_bn(create_model("nasnet_mobile", num_classes=10)).eval()
    x = torch.randn(2, 3, 33, 40)
    with torch.no_grad(), fastzoo.backend("reference"):
        ref = m(x)
    errs = assert_same_logits(m, _Fixed(ref), x)
    assert max(errs.values()) < 1e-5
    assert_same_logits(m, _Fixed(ref), x.contiguous(memory_format=torch.channels_last))
    calls = fused_calls(m, x, monkeypatch)
    assert {k: calls[k] for k in MOBILE_CALLS} == MOBILE_CALLS == {"dwconv_bn_act": 160, "pwconv_bn_act": 196}


class _Fixed(torch.nn.Module):
    def __init__(self, y):
        super().__init__()
        self.y = y

    def forward(self, x):
        return self.y


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("nasnetamobile", in_chans=1, num_classes=7)
    assert m.conv0.conv.in_channels == 1 and m.last_linear.out_features == 7
    assert list_models("nasnet*") == ["nasnet_large", "nasnet_mobile"]
    torch.manual_seed(0)
    m = create_model("nasnet_mobile", num_classes=5, dropout=0.5).train()
    x = torch.randn(2, 3, 32, 32)
    a, b = m(x), m(x)
    assert max_rel_err(a, b) > 1e-3  # dropout active in train mode
    m.eval()
    torch.testing.assert_close(m(x), m(x))
