"""ShuffleNet V1 (no torchvision / timm model): the oracle is the paper. Complexity in MFLOPs (the paper's FLOPs
are multiply-adds) at 224x224 against table 1 (1x, g = 1..8) and the 0.5x / 1.5x / 2x g=3 figures, parameter
counts against the authors' implementation (megvii ShuffleNet-Series README, rounded to 0.1M, fc without bias),
the table 1 layer table walked by hand; then the fused eval forward against the reference backend and against
the unfused composition (train-mode modules with BN in eval), training, channels_last, weights and options."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastzoo
from fastzoo.models import canonical_name, create_model, list_models
from zoo_helpers import (check_train_grads_and_channels_last, check_weights_round_trip, count_params, fused_calls,
                         max_rel_err, randomize_bn)

# (g, width): paper MFLOPs (mult-adds). Table 1 (1x, all g); section 4.2 / tables 2 and 5 (g=3 at 0.5x, 1.5x, 2x).
PAPER_MFLOPS = {(1, "x1_0"): 143, (2, "x1_0"): 140, (3, "x1_0"): 137, (4, "x1_0"): 133, (8, "x1_0"): 137,
                (3, "x0_5"): 38, (3, "x1_5"): 292, (3, "x2_0"): 524}
# (g, width): params in M of the authors' implementation (README; its fc has no bias)
MEGVII_PARAMS = {(3, "x0_5"): 0.7, (3, "x1_0"): 1.9, (3, "x1_5"): 3.4, (3, "x2_0"): 5.4,
                 (8, "x0_5"): 1.0, (8, "x1_0"): 2.4, (8, "x1_5"): 4.3, (8, "x2_0"): 6.5}
# (g, width): exact parameter counts of this implementation, 1000 classes (regression guard)
PARAMS = {(3, "x1_0"): 1865728, (8, "x1_0"): 2434768, (1, "x1_0"): 1531936}


def _unfused(model):
    """The plain PyTorch composition: modules in train mode (no folding, no fused ops), BN on running stats."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


@pytest.mark.parametrize("g,width", sorted(PAPER_MFLOPS))
def test_complexity_matches_paper(g, width):
    m = create_model(f"shufflenetv1_g{g}_{width}").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad(), fastzoo.backend("reference"):
        m(torch.randn(1, 3, 224, 224))
    mflops = fc.get_total_flops() / 2e6  # FlopCounterMode counts 2 per multiply-add (convs and the fc)
    want = PAPER_MFLOPS[(g, width)]
    assert abs(mflops - want) <= max(1.5, 0.01 * want), f"{mflops:.1f} MFLOPs vs paper {want}"


@pytest.mark.parametrize("g,width", sorted(MEGVII_PARAMS))
def test_params_match_reference_implementation(g, width):
    with torch.device("meta"):
        m = create_model(f"shufflenetv1_g{g}_{width}")
    n = count_params(m) - 1000  # the reference fc has no bias
    assert abs(n / 1e6 - MEGVII_PARAMS[(g, width)]) <= 0.05 + 1e-9
    if (g, width) in PARAMS:
        assert count_params(m) == PARAMS[(g, width)]


def test_layer_table():
    """Table 1 by hand: conv1 24 /2, max-pool /2, stages of 4 / 8 / 4 units, the first of each with stride 2 and
    a concatenated average-pooled shortcut, bottleneck = out / 4, stage2's first 1x1 ungrouped."""
    want = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
    for g, widths in want.items():
        with torch.device("meta"):
            m = create_model(f"shufflenetv1_g{g}_x1_0")
        assert (m.conv1.conv.out_channels, m.conv1.conv.stride, m.conv1.conv.kernel_size) == (24, (2, 2), (3, 3))
        assert (m.maxpool.kernel_size, m.maxpool.stride) == (3, 2)
        cin = 24
        for stage, out, repeats in zip((m.stage2, m.stage3, m.stage4), widths, (4, 8, 4)):
            assert len(stage) == repeats
            for j, unit in enumerate(stage):
                first = j == 0
                assert unit.stride == (2 if first else 1) and unit.dwconv.conv.stride == (unit.stride,) * 2
                assert unit.conv1.conv.in_channels == cin and unit.conv1.conv.out_channels == out // 4
                assert unit.conv1.conv.groups == (1 if (stage is m.stage2 and first) else g)
                assert unit.dwconv.conv.groups == out // 4 and len(unit.dwconv) == 2  # dw + BN, no ReLU
                assert unit.conv2.conv.groups == g
                assert unit.conv2.conv.out_channels == (out - cin if first else out)
                assert isinstance(unit.shuffle, torch.nn.Identity) == (g == 1)
                cin = out
        assert m.fc.in_features == widths[-1] == m.num_features


def test_widths_scale_channels():
    with torch.device("meta"):
        for width, s in (("x0_5", 0.5), ("x1_5", 1.5), ("x2_0", 2.0)):
            m = create_model(f"shufflenetv1_g3_{width}")
            assert [m.stage2[0].conv1.conv.out_channels * 4, m.stage3[0].conv2.conv.in_channels * 4,
                    m.num_features] == [int(240 * s), int(480 * s), int(960 * s)]
        m = create_model("shufflenetv1_g4_x0_5")  # 136 / 4 = 34 does not divide into 4 groups: 144
        assert m.stage2[1].conv1.conv.in_channels == 144
    assert len(list_models("shufflenetv1_g*")) == 20
    assert canonical_name("shufflenet_v1") == "shufflenetv1_g3_x1_0"


@pytest.mark.parametrize("name,size", [("shufflenetv1_g3_x1_0", (67, 53)), ("shufflenetv1_g1_x0_5", (32, 45)),
                                       ("shufflenetv1_g8_x0_5", (64, 64))])
def test_fused_matches_reference_and_unfused(name, size, monkeypatch):
    torch.manual_seed(0)
    m = randomize_bn(create_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        with fastzoo.backend("reference"):
            ref = m(x)
        got = m(x)
        plain = _unfused(m)(x)
    assert got.shape == (1, 10)
    assert max_rel_err(got, ref) <= 1e-4 and max_rel_err(got, plain) <= 1e-4
    calls = fused_calls(m.eval(), x, monkeypatch)
    g = m.groups
    assert calls["dwconv_bn_act"] == 16 and calls["channel_shuffle"] == (16 if g > 1 else 0)
    # g=1: both 1x1 convs of every unit; g>1: only stage2's ungrouped first 1x1; and the fc
    assert calls["pwconv_bn_act"] == (32 if g == 1 else 1) + 1


def test_train_mode_gradients_and_channels_last():
    torch.manual_seed(0)
    check_train_grads_and_channels_last(create_model("shufflenetv1_g3_x0_5", num_classes=10, dropout=0.2),
                                        torch.randn(2, 3, 64, 64))


def test_weights_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    check_weights_round_trip("shufflenetv1_g2_x0_5", torch.randn(1, 3, 48, 48), tmp_path,
                             "stage3.2.conv2.1.running_var", num_classes=10)


def test_options():
    m = create_model("shufflenetv1_g3_x1_0", in_chans=1, num_classes=7).eval()
    assert m.conv1.conv.in_channels == 1
    with torch.no_grad():
        assert m(torch.randn(2, 1, 40, 40)).shape == (2, 7)
    with pytest.raises(ValueError, match="groups"):
        fastzoo.models.shufflenetv1.ShuffleNetV1(groups=5)
