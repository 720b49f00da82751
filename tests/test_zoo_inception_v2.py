"""Inception V2 / BN-Inception (no torchvision / timm model): the oracle is the paper's figure 5 layer table,
walked by hand (every conv's kernel, stride and channels; every module's output channels and map size at 224x224),
and the parameter count it determines (11.3M, the figure quoted for the Caffe model); then the fused eval forward
against the reference backend and the unfused composition, training, channels_last, weights and options."""
import pytest
import torch
import torch.nn.functional as F

import fastzoo
from fastzoo.models import canonical_name, create_model
from zoo_helpers import (check_train_grads_and_channels_last, check_weights_round_trip, count_params, fused_calls,
                         max_rel_err, randomize_bn)

# figure 5 by hand: module -> (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool proj or None (pass
# through), stride, output channels (the filter columns' sum), output map side at 224x224)
TABLE = {"3a": (64, 64, 64, 64, 96, 32, 1, 256, 28), "3b": (64, 64, 96, 64, 96, 64, 1, 320, 28),
         "3c": (0, 128, 160, 64, 96, None, 2, 576, 14), "4a": (224, 64, 96, 96, 128, 128, 1, 576, 14),
         "4b": (192, 96, 128, 96, 128, 128, 1, 576, 14), "4c": (160, 128, 160, 128, 160, 128, 1, 608, 14),
         "4d": (96, 128, 192, 160, 192, 128, 1, 608, 14), "4e": (0, 128, 192, 192, 256, None, 2, 1056, 7),
         "5a": (352, 192, 320, 160, 224, 128, 1, 1024, 7), "5b": (352, 192, 320, 192, 224, 128, 1, 1024, 7)}


def _unfused(model):
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


def _conv(m, name):
    c = getattr(m, name)
    return c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]


def test_param_count():
    with torch.device("meta"):
        m = create_model("inception_v2")
    assert count_params(m) == 11295240 and round(count_params(m) / 1e6, 1) == 11.3
    conv_biases = sum(p.numel() for k, p in m.named_parameters() if k.endswith(".bias") and "_bn." not in k
                      and not k.startswith("last_linear"))
    assert count_params(m) - conv_biases == 11285224


def test_layer_table():
    with torch.device("meta"):
        m = create_model("inception_v2").train()
        assert _conv(m, "conv1_7x7_s2") == (3, 64, 7, 2) and _conv(m, "conv2_3x3_reduce") == (64, 64, 1, 1)
        assert _conv(m, "conv2_3x3") == (64, 192, 3, 1)
        x = torch.empty(1, 3, 224, 224)
        x = F.max_pool2d(m._cbr("conv1_7x7_s2", x), 3, 2, ceil_mode=True)
        assert x.shape[-1] == 56
        x = F.max_pool2d(m._cbr("conv2_3x3", m._cbr("conv2_3x3_reduce", x)), 3, 2, ceil_mode=True)
        assert x.shape[1:] == (192, 28, 28)
        assert [r[0] for r in m.rows] == list(TABLE)
        for row in m.rows:
            c1, r3, c3, rd, cd, proj, s, out, side = TABLE[row[0]]
            b, cin = f"inception_{row[0]}", x.shape[1]
            assert hasattr(m, f"{b}_1x1") == bool(c1) and hasattr(m, f"{b}_pool_proj") == (proj is not None)
            if c1:
                assert _conv(m, f"{b}_1x1") == (cin, c1, 1, 1)
            assert _conv(m, f"{b}_3x3_reduce") == (cin, r3, 1, 1) and _conv(m, f"{b}_3x3") == (r3, c3, 3, s)
            assert _conv(m, f"{b}_double_3x3_reduce") == (cin, rd, 1, 1)
            assert _conv(m, f"{b}_double_3x3_1") == (rd, cd, 3, 1) and _conv(m, f"{b}_double_3x3_2") == (cd, cd, 3, s)
            if proj:
                assert _conv(m, f"{b}_pool_proj") == (cin, proj, 1, 1)
            x = m._module(row, x)
            assert x.shape[1:] == (out, side, side), row[0]
        assert m.last_linear.in_features == 1024 == m.num_features


@pytest.mark.parametrize("size", [(64, 96), (32, 32)])
def test_fused_matches_reference_and_unfused(size, monkeypatch):
    torch.manual_seed(0)
    m = randomize_bn(create_model("inception_v2", num_classes=10)).eval()
    for k, p in m.named_parameters():  # non-zero conv biases: folded into the BN shift
        if k.endswith(".bias") and "_bn." not in k:
            p.data.uniform_(-0.1, 0.1)
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
        one_by_one = sum(1 for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (1, 1))
        assert calls["pwconv_bn_act"] == one_by_one + 1 == 1 + 8 * 4 + 2 * 2 + 1  # and the classifier


def test_odd_map_error():
    m = create_model("inception_v2", num_classes=10).eval()
    with pytest.raises(ValueError, match="inception_3c needs an even-sized input map"):
        m(torch.randn(1, 3, 40, 40))


def test_train_mode_gradients_and_channels_last():
    torch.manual_seed(0)
    check_train_grads_and_channels_last(create_model("inception_v2", num_classes=10, dropout=0.2),
                                        torch.randn(2, 3, 64, 64))


def test_weights_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    old = lambda sd: {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # noqa: E731, pre-0.4.1
    check_weights_round_trip("inception_v2", torch.randn(1, 3, 64, 64), tmp_path,
                             "inception_4c_double_3x3_1_bn.running_mean", load_name="bninception", extra=(old,),
                             num_classes=10)


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("bn_inception", in_chans=1, num_classes=7)
    assert m.conv1_7x7_s2.in_channels == 1 and m.last_linear.out_features == 7
    assert canonical_name("bninception") == "inception_v2"
