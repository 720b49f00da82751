"""Residual Attention Network 56 / 92 (no torchvision / timm model): the oracle is the paper's table 2, parameters
(31.9M / 51.3M) and FLOPs (6.2G / 10.4G multiply-adds at 224x224), with the layer table and the attention module's
structure (p = 1, t = 2, r = 1) walked by hand; then the fused eval forward against the reference backend and the
unfused composition, training, channels_last, weights and options."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastzoo
from fastzoo.models import canonical_name, create_model
from fastzoo.models.residual_attention import AttentionModule
from fastzoo.models.resnetv2 import PreActBottleneck
from zoo_helpers import (check_train_grads_and_channels_last, check_weights_round_trip, count_params, fused_calls,
                         max_rel_err, randomize_bn)

# depth: (paper params, tolerance, exact count here, paper G mult-adds)
PAPER = {56: (31.9e6, 0.005, 31810728, 6.2), 92: (51.3e6, 0.025, 52466344, 10.4)}


def _unfused(model):
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


@pytest.mark.parametrize("depth", [56, 92])
def test_params_and_flops_match_paper(depth):
    want, tol, exact, gflops = PAPER[depth]
    with torch.device("meta"):
        m = create_model(f"ran{depth}").train()
        assert count_params(m) == exact and abs(exact - want) <= tol * want
        with FlopCounterMode(display=False) as fc:
            y = m(torch.empty(2, 3, 224, 224))
    assert y.shape == (2, 1000)
    macs = fc.get_total_flops() / 2 / 2 / 1e9  # 2 FLOPs per multiply-add, batch 2
    assert abs(macs - gflops) <= 0.015 * gflops, f"{macs:.2f} G mult-adds vs paper {gflops}"


def _units(seq):
    return [u for u in seq if isinstance(u, PreActBottleneck)]


@pytest.mark.parametrize("depth,modules", [(56, (1, 1, 1)), (92, (1, 2, 3))])
def test_layer_table(depth, modules):
    """Table 2: conv 7x7/2 64, max-pool 3x3/2, stage1..3 = residual unit + attention modules (56, 28, 14),
    stage4 = 3 residual units (7); units 64->256, 256->512 /2, 512->1024 /2, 1024->2048 /2; modules with p=1 t=2
    r=1 whose mask branch pools 3 / 2 / 1 times."""
    with torch.device("meta"):
        m = create_model(f"ran{depth}")
    assert (m.conv1.conv.kernel_size, m.conv1.conv.stride, m.conv1.conv.out_channels) == ((7, 7), (2, 2), 64)
    assert (m.maxpool.kernel_size, m.maxpool.stride) == (3, 2)
    cin = 64
    for stage, out, n, downs, stride in zip((m.stage1, m.stage2, m.stage3), (256, 512, 1024), modules, (3, 2, 1),
                                            (1, 2, 2)):
        unit, atts = stage[0], list(stage)[1:]
        assert isinstance(unit, PreActBottleneck) and len(atts) == n
        assert (unit.conv1.in_channels, unit.conv3.out_channels, unit.conv1.out_channels) == (cin, out, out // 4)
        assert unit.conv2.stride == (stride, stride) and unit.downsample is not None
        for a in atts:
            assert isinstance(a, AttentionModule)
            assert len(a.pre) == 1 and len(a.trunk) == 2 and len(a.post) == 1  # p, t
            assert len(a.down) == downs and len(a.skip) == len(a.up) == downs - 1
            assert [len(d) for d in a.down] == [1] * (downs - 1) + [2] and all(len(u) == 1 for u in a.up)  # r
            units = [u for mod in a.modules() for u in [mod] if isinstance(u, PreActBottleneck)]
            assert len(units) == 4 + 3 * downs - 1 and all(
                u.conv3.out_channels == out and u.downsample is None for u in units)
            assert a.mask.conv1.weight.shape == a.mask.conv2.weight.shape == (out, out, 1, 1)
        cin = out
    assert len(m.stage4) == 3 and m.stage4[0].conv2.stride == (2, 2)
    assert [u.conv3.out_channels for u in m.stage4] == [2048] * 3 and m.fc.in_features == 2048


@pytest.mark.parametrize("size", [(32, 32), (45, 37)])
def test_fused_matches_reference_and_unfused(size, monkeypatch):
    torch.manual_seed(0)
    m = randomize_bn(create_model("ran56", num_classes=10)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        with fastzoo.backend("reference"):
            ref = m(x)
        got = m(x)
        plain = _unfused(m)(x)
    assert got.shape == (1, 10)
    assert max_rel_err(got, ref) <= 1e-4 and max_rel_err(got, plain) <= 1e-4
    if size == (32, 32):
        calls = fused_calls(m.eval(), x, monkeypatch)
        units = sum(isinstance(u, PreActBottleneck) for u in m.modules())
        # conv1 + conv3 of every unit, stage1's stride-1 projection, the two 1x1 convs of the 3 mask heads, fc
        assert calls["pwconv_bn_act"] == 2 * units + 1 + 2 * 3 + 1


def test_train_mode_gradients_and_channels_last():
    torch.manual_seed(0)
    check_train_grads_and_channels_last(create_model("ran56", num_classes=10, dropout=0.1), torch.randn(2, 3, 32, 32))


def test_weights_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    check_weights_round_trip("ran56", torch.randn(1, 3, 32, 32), tmp_path, "stage2.1.mask.norm2.weight",
                             num_classes=10)


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("ran92", in_chans=1, num_classes=7)
    assert m.conv1.conv.in_channels == 1 and m.fc.out_features == 7
    assert canonical_name("residual_attention_92") == "ran92" and canonical_name("attention56") == "ran56"
