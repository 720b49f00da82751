"""Inception-ResNet-v1 (no torchvision / timm model, and no parameter count in the paper): the oracle is the paper's
figures 7 and 10-15 walked by hand (stem, the A / B / C blocks' branches, reductions A (k=192, l=192, m=256, n=384)
and B, the 35x35x256 / 17x17x896 / 8x8x1792 grids at 299x299) and FaceNet's layout (the only published weights:
its 23.5M-parameter trunk + embedding); then the fused eval forward against the reference backend and the unfused
composition, training, channels_last, weights and options."""
import pytest
import torch

import fastzoo
from fastzoo.models import canonical_name, create_model
from zoo_helpers import (check_train_grads_and_channels_last, check_weights_round_trip, count_params, fused_calls,
                         max_rel_err, randomize_bn)


def _unfused(model):
    model.train()
    for m in model.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)):
            m.eval()
    return model


def _conv(block):
    c = block.conv
    return c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding


def test_param_counts():
    with torch.device("meta"):
        paper_head = create_model("inception_resnet_v1")
        facenet_head = create_model("inception_resnet_v1", embedding_dim=512)
    trunk = count_params(paper_head) - 1792 * 1000 - 1000
    assert trunk == 22564096 and count_params(paper_head) == 24357096
    # FaceNet's embedding model (classify=False): trunk + last_linear 1792x512 + last_bn: ~23.5M
    facenet = trunk + 1792 * 512 + 2 * 512
    assert facenet == count_params(facenet_head) - 512 * 1000 - 1000 == 23482624


def test_layer_table():
    with torch.device("meta"):
        m = create_model("inception_resnet_v1").train()
        # figure 14 stem ("V" = valid): 3x3/2 32 V, 3x3 32 V, 3x3 64, max-pool 3x3/2 V, 1x1 80, 3x3 192 V, 3x3/2 256 V
        assert _conv(m.conv2d_1a) == (3, 32, (3, 3), (2, 2), (0, 0))
        assert _conv(m.conv2d_2a) == (32, 32, (3, 3), (1, 1), (0, 0))
        assert _conv(m.conv2d_2b) == (32, 64, (3, 3), (1, 1), (1, 1))
        assert (m.maxpool_3a.kernel_size, m.maxpool_3a.stride, m.maxpool_3a.padding) == (3, 2, 0)
        assert _conv(m.conv2d_3b) == (64, 80, (1, 1), (1, 1), (0, 0))
        assert _conv(m.conv2d_4a) == (80, 192, (3, 3), (1, 1), (0, 0))
        assert _conv(m.conv2d_4b) == (192, 256, (3, 3), (2, 2), (0, 0))
        # figure 15: 5 A (scale 0.17), 10 B (0.10), 5 C (0.20) + FaceNet's final C (scale 1, no ReLU)
        assert [len(m.repeat_1), len(m.repeat_2), len(m.repeat_3)] == [5, 10, 5]
        assert {b.scale for b in m.repeat_1} == {0.17} and {b.scale for b in m.repeat_2} == {0.10}
        assert {b.scale for b in m.repeat_3} == {0.20} and all(b._relu for b in m.repeat_3)
        assert m.block8.scale == 1.0 and not m.block8._relu
        a, b, c = m.repeat_1[0], m.repeat_2[0], m.repeat_3[0]
        # figure 10: 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 32, 3x3 32 -> 1x1 256 (linear, with bias)
        assert _conv(a.branch0)[:3] == (256, 32, (1, 1))
        assert [_conv(x)[:3] for x in a.branch1] == [(256, 32, (1, 1)), (32, 32, (3, 3))]
        assert [_conv(x)[:3] for x in a.branch2] == [(256, 32, (1, 1)), (32, 32, (3, 3)), (32, 32, (3, 3))]
        assert a.conv2d.weight.shape == (256, 96, 1, 1) and a.conv2d.bias is not None
        # figure 11: 1x1 128 | 1x1 128, 1x7 128, 7x1 128 -> 1x1 896
        assert _conv(b.branch0)[:3] == (896, 128, (1, 1))
        assert [_conv(x)[:3] for x in b.branch1] == [(896, 128, (1, 1)), (128, 128, (1, 7)), (128, 128, (7, 1))]
        assert b.conv2d.weight.shape == (896, 256, 1, 1)
        # figure 13: 1x1 192 | 1x1 192, 1x3 192, 3x1 192 -> 1x1 1792
        assert _conv(c.branch0)[:3] == (1792, 192, (1, 1))
        assert [_conv(x)[:3] for x in c.branch1] == [(1792, 192, (1, 1)), (192, 192, (1, 3)), (192, 192, (3, 1))]
        assert c.conv2d.weight.shape == (1792, 384, 1, 1)
        # figure 7, k=192 l=192 m=256 n=384: 3x3/2 n | 1x1 k, 3x3 l, 3x3/2 m | max-pool 3x3/2
        r = m.mixed_6a
        assert _conv(r.branch0)[:4] == (256, 384, (3, 3), (2, 2))
        assert [_conv(x)[:4] for x in r.branch1] == [(256, 192, (1, 1), (1, 1)), (192, 192, (3, 3), (1, 1)),
                                                    (192, 256, (3, 3), (2, 2))]
        # figure 12: 1x1 256, 3x3/2 384 | 1x1 256, 3x3/2 256 | 1x1 256, 3x3 256, 3x3/2 256 | max-pool 3x3/2
        r = m.mixed_7a
        assert [_conv(x)[1:4:2] for x in r.branch0] == [(256, (1, 1)), (384, (2, 2))]
        assert [_conv(x)[1:4:2] for x in r.branch1] == [(256, (1, 1)), (256, (2, 2))]
        assert [_conv(x)[1:4:2] for x in r.branch2] == [(256, (1, 1)), (256, (1, 1)), (256, (2, 2))]
        # the grids at 299x299
        x = torch.empty(1, 3, 299, 299)
        shapes = {}
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                     "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"):
            x = getattr(m, name)(x)
            shapes[name] = tuple(x.shape[1:])
    assert shapes["conv2d_1a"] == (32, 149, 149) and shapes["maxpool_3a"] == (64, 73, 73)
    assert shapes["conv2d_4a"] == (192, 71, 71)
    assert shapes["conv2d_4b"] == shapes["repeat_1"] == (256, 35, 35)
    assert shapes["mixed_6a"] == shapes["repeat_2"] == (896, 17, 17)
    assert shapes["mixed_7a"] == shapes["block8"] == (1792, 8, 8)


@pytest.mark.parametrize("size,head", [((75, 75), {}), ((79, 83), {"embedding_dim": 16})])
def test_fused_matches_reference_and_unfused(size, head, monkeypatch):
    torch.manual_seed(0)
    m = randomize_bn(create_model("inception_resnet_v1", num_classes=10, **head)).eval()
    if head:  # BatchNorm1d statistics too
        m.last_bn.running_mean.uniform_(-0.1, 0.1), m.last_bn.running_var.uniform_(0.75, 1.25)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        with fastzoo.backend("reference"):
            ref = m(x)
        got = m(x)
        plain = _unfused(m)(x)
    assert got.shape == (1, 10)
    assert max_rel_err(got, ref) <= 1e-4 and max_rel_err(got, plain) <= 1e-4
    if not head:
        calls = fused_calls(m.eval(), x, monkeypatch)
        # stem 1x1, 3 (A) / 2 (B) / 2 (C) branch 1x1s + each block's up-projection, reduction A 1, B 3, logits
        assert calls["pwconv_bn_act"] == 1 + 5 * 4 + 10 * 3 + 6 * 3 + 1 + 3 + 1


def test_train_mode_gradients_and_channels_last():
    torch.manual_seed(0)
    check_train_grads_and_channels_last(create_model("inception_resnet_v1", num_classes=10, embedding_dim=32),
                                        torch.randn(2, 3, 75, 75))


def test_weights_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    sd = check_weights_round_trip("inception_resnet_v1", torch.randn(1, 3, 75, 75), tmp_path,
                                  "repeat_2.7.conv2d.bias", num_classes=10)
    with pytest.raises(KeyError, match=r"missing keys \(6\): last_linear\.weight, last_bn\.weight"):
        create_model("inception_resnet_v1", num_classes=10, embedding_dim=512, weights=sd)


def test_options_and_registry():
    with torch.device("meta"):
        m = create_model("inceptionresnetv1", in_chans=1, num_classes=7, dropout=0.6)
    assert m.conv2d_1a.conv.in_channels == 1 and m.logits.out_features == 7 and m.dropout.p == 0.6
    assert canonical_name("inceptionresnetv1") == "inception_resnet_v1"
