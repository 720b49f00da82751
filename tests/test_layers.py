"""fastzoo.layers against torchvision's blocks (same state_dict, same outputs), BN folding and its
invalidation, training through the layers, channels_last, torch.compile and torch.export."""
import pytest
import torch
from torch import nn

import fastzoo
from fastzoo import _ext, ops
from fastzoo.layers import ConvBnAct, FusedMBConv, Linear, MBConv, SqueezeExcite, fold_bn
from helpers import poison
from zoo_helpers import fused_calls

tv_mbv3 = pytest.importorskip("torchvision.models.mobilenetv3")
tv_eff = pytest.importorskip("torchvision.models.efficientnet")
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation  # noqa: E402


def randomize_bn(model):
    """Non-trivial BN statistics and affine parameters, so that folding is really exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def same(fz, tv, x, tol=1e-5):
    fz.load_state_dict(tv.state_dict())  # strict: same keys, same shapes
    with torch.no_grad():
        torch.testing.assert_close(fz(x), tv(x), rtol=tol, atol=tol)


@pytest.fixture(params=["reference", "auto"])
def each_backend(request):
    with fastzoo.backend(request.param):
        yield request.param


@pytest.mark.parametrize("groups,k,stride,act", [(24, 3, 1, nn.Hardswish), (24, 5, 2, nn.ReLU),
                                                 (1, 1, 1, nn.ReLU6), (1, 3, 2, nn.SiLU), (4, 3, 1, None)])
def test_conv_bn_act_matches_torchvision(each_backend, groups, k, stride, act):
    cout = 24 if groups == 24 else 32
    tv = randomize_bn(Conv2dNormActivation(24, cout, k, stride, groups=groups, activation_layer=act)).eval()
    fz = ConvBnAct(24, cout, k, stride, groups=groups, act=act() if act else None).eval()
    x = torch.randn(2, 24, 11, 10)
    same(fz, tv, x)
    same(fz, tv, x.contiguous(memory_format=torch.channels_last))


def test_squeeze_excite_matches_torchvision(each_backend):
    tv = SqueezeExcitation(24, 8, scale_activation=nn.Hardsigmoid)
    same(SqueezeExcite(24, 8, "relu", "hardsigmoid"), tv, torch.randn(2, 24, 7, 7))


@pytest.mark.parametrize("cfg", [(16, 3, 16, 16, False, "RE", 2), (16, 5, 72, 24, True, "HS", 1),
                                 (24, 5, 96, 24, True, "HS", 1)])
def test_mbconv_matches_torchvision_mobilenetv3_block(each_backend, cfg):
    c = tv_mbv3.InvertedResidualConfig(*cfg, 1, 1.0)
    tv = randomize_bn(tv_mbv3.InvertedResidual(c, nn.BatchNorm2d)).eval()
    se = tv.block[2].fc1.out_channels if c.use_se else None
    act = "hardswish" if c.use_hs else "relu"
    fz = MBConv(c.input_channels, c.out_channels, c.kernel, c.stride, c.expanded_channels, se, act).eval()
    x = torch.randn(2, c.input_channels, 13, 11)
    same(fz, tv, x)
    same(fz, tv, x.contiguous(memory_format=torch.channels_last))


def test_mbconv_and_fused_match_torchvision_efficientnet(each_backend):
    norm = lambda c: nn.BatchNorm2d(c, eps=1e-3)  # noqa: E731
    cfg = tv_eff.MBConvConfig(6, 5, 1, 40, 40, 1)
    tv = randomize_bn(tv_eff.MBConv(cfg, 0.2, norm)).eval()
    fz = MBConv(40, 40, 5, 1, 240, 10, "silu", "silu", "sigmoid", drop_path_rate=0.2, bn_eps=1e-3).eval()
    same(fz, tv, torch.randn(2, 40, 9, 9))
    for expand in (4, 1):
        cfg = tv_eff.FusedMBConvConfig(expand, 3, 1, 24, 24, 1)
        tv = randomize_bn(tv_eff.FusedMBConv(cfg, 0.1, norm)).eval()
        fz = FusedMBConv(24, 24, 3, 1, 24 * expand, "silu", bn_eps=1e-3).eval()
        same(fz, tv, torch.randn(2, 24, 9, 10))


def test_fold_is_cached_and_invalidated():
    layer = randomize_bn(ConvBnAct(8, 8, 3, groups=8, act="relu")).eval()
    torch.set_grad_enabled(False)  # inference: cached (with grad enabled the fold stays differentiable)
    try:
        _check_fold_cache(layer)
    finally:
        torch.set_grad_enabled(True)


@pytest.mark.parametrize("compiled", [True, False], ids=["C++ key", "Python key"])
def test_fold_cache_key(monkeypatch, compiled):
    """The key changes with an in-place update or new storage, not with a read; None is skipped and
    inference tensors (no version counter) count as version 0, in the C++ key and the Python fallback."""
    from fastzoo.layers.bn_fold import FoldCache
    if not compiled:
        monkeypatch.setattr(_ext, "loaded", lambda: False)
    elif not _ext.loaded():
        pytest.skip("extension not built")
    a, b = torch.randn(3), torch.randn(4)
    key = FoldCache._key_of((a, None, b))
    assert FoldCache._key_of((a, None, b)) == key and FoldCache._key_of((a, b)) == key
    b.add_(1)
    assert FoldCache._key_of((a, None, b)) != key
    assert FoldCache._key_of((a.clone(), None, b)) != FoldCache._key_of((a, None, b))
    with torch.inference_mode():
        c = torch.randn(2)
    assert FoldCache._key_of((c,)) == FoldCache._key_of((c,))
    assert FoldCache._key_of((c, a)) != FoldCache._key_of((a, c))


def _check_fold_cache(layer):
    first = layer.folded()
    assert layer.folded() is first, "folded once per eval-mode module"
    with torch.no_grad():
        layer.bn.running_var.mul_(2)  # in-place change: refold
    second = layer.folded()
    assert second is not first
    torch.testing.assert_close(second[1], fold_bn(layer.bn)[0])
    layer.train()(torch.randn(4, 8, 5, 5))  # batch statistics update the running stats in place
    layer.eval()
    assert layer.folded() is not second
    layer.load_state_dict({k: v.clone() + 0.1 for k, v in layer.state_dict().items()})
    torch.testing.assert_close(layer.folded()[2], fold_bn(layer.bn)[1])


def test_mbconv_fused_output_follows_every_change_of_its_tensors():
    """The block's cached op arguments are rebuilt after an in-place edit, a reassigned parameter (SE
    included) and a replaced buffer: the fused output stays equal to the children run in order."""
    fz = randomize_bn(MBConv(16, 24, 5, 1, 48, 12, "hardswish")).eval()
    x = torch.randn(2, 16, 9, 9)

    def check():
        with torch.no_grad():
            y = fz(x)
            torch.testing.assert_close(y, fz.block(x), rtol=1e-4, atol=1e-5)
        return y

    with torch.no_grad():
        before = check()
        fz.block[0].bn.weight.mul_(1.5)
        check()
        fz.se.fc1.weight = nn.Parameter(torch.randn_like(fz.se.fc1.weight))
        check()
        fz.block[-1].bn.running_mean = torch.randn(24)
        after = check()
        fz.double()  # new storage of another dtype for every tensor, same Parameter objects
        x = x.double()
        assert check().dtype == torch.float64
    assert not torch.allclose(before, after)


def test_training_through_the_layers_matches_torchvision(each_backend):
    """Train mode: batch statistics; loss and gradients equal torchvision's on the same weights."""
    c = tv_mbv3.InvertedResidualConfig(16, 5, 72, 16, True, "HS", 1, 1, 1.0)
    tv = randomize_bn(tv_mbv3.InvertedResidual(c, nn.BatchNorm2d)).train()
    fz = MBConv(16, 16, 5, 1, 72, tv.block[2].fc1.out_channels, "hardswish").train()
    fz.load_state_dict(tv.state_dict())
    x = torch.randn(4, 16, 9, 9)
    lf, lt = fz(x).square().mean(), tv(x).square().mean()
    lf.backward()
    lt.backward()
    torch.testing.assert_close(lf, lt)
    for (n, pf), pt in zip(fz.named_parameters(), tv.parameters()):
        torch.testing.assert_close(pf.grad, pt.grad, rtol=1e-4, atol=1e-6, msg=n)
    for bf, bt in zip(fz.buffers(), tv.buffers()):
        torch.testing.assert_close(bf, bt)


def _block():
    c = tv_mbv3.InvertedResidualConfig(16, 3, 64, 16, True, "HS", 1, 1, 1.0)
    tv = randomize_bn(tv_mbv3.InvertedResidual(c, nn.BatchNorm2d)).eval()
    fz = nn.Sequential(ConvBnAct(3, 16, 3, 2, act="hardswish"),
                       MBConv(16, 16, 3, 1, 64, tv.block[2].fc1.out_channels, "hardswish"),
                       ConvBnAct(16, 16, 3, 1, groups=16, act="relu")).eval()
    fz[1].load_state_dict(tv.state_dict())
    return randomize_bn(fz)


def test_torch_compile_fullgraph_sees_fastzoo_ops():
    fz = _block()
    x = torch.randn(2, 3, 17, 15)
    with torch.no_grad():
        want = fz(x)
        got = torch.compile(fz, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_torch_export_graph_has_fastzoo_ops():
    fz = _block()
    x = torch.randn(2, 3, 17, 15)
    ep = torch.export.export(fz, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    if fastzoo.backends.resolve("cpu") == "cpu":
        assert any(t.startswith("fastzoo.mbconv") for t in targets), targets
        assert any(t.startswith("fastzoo.dwconv_bn_act") for t in targets), targets
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), fz(x), rtol=1e-5, atol=1e-5)


def test_training_through_fused_ops_with_frozen_bn():
    """Gradients flow through the fused ops themselves (eval-mode BN, e.g. fine-tuning a frozen backbone)."""
    fz = _block()
    x = torch.randn(2, 3, 17, 15, requires_grad=True)
    fz(x).sum().backward()
    grads = [p.grad for p in fz.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:3])
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("training", [True, False])
def test_autocast_bf16_runs_the_fused_ops(training):
    """Under autocast the fused ops take bf16 activations with the module's fp32 weights, as conv does."""
    torch.manual_seed(0)
    blk = MBConv(16, 16, 3, 1, expand_chs=48, se_chs=8, act="hardswish").train(training)
    x = torch.randn(2, 16, 9, 9)
    want = blk(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = blk(x)
    # eval: the whole block is one op, in bf16; train: the residual add promotes to x's float32, as in torchvision
    assert got.dtype == (torch.float32 if training else torch.bfloat16)
    assert ((got.float() - want).abs().max() / want.abs().max()).item() < 5e-2
    if training:
        got.float().square().mean().backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.isfinite().all()
                   for p in blk.parameters())


@pytest.mark.parametrize("n", [1, 2, 3, 32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("view", ["dense", "rows", "columns"])
def test_linear_inference_runs_the_fused_op(monkeypatch, n, bias, view):
    """fastzoo.layers.Linear is nn.Linear (same state_dict); float32 CPU inference goes through
    pwconv_bn_act on (N, C, 1, 1) and gives F.linear's result; dense inputs, every other row, every other column."""
    torch.manual_seed(0)
    ref = nn.Linear(37, 1003, bias=bias)
    lin = Linear(37, 1003, bias=bias).eval()
    lin.load_state_dict(ref.state_dict())  # strict: same keys
    wide = torch.randn(2 * n, 74)
    x = {"dense": wide[:n, :37], "rows": wide[::2, :37], "columns": wide[:n, ::2]}[view]
    with torch.inference_mode():
        poison("cpu", n * 1003)
        got = lin(x)
    torch.testing.assert_close(got, ref(x).detach(), rtol=1e-5, atol=1e-5)
    assert fused_calls(lin, x, monkeypatch) == ({"pwconv_bn_act": 1} if _ext.loaded() else {})


def test_linear_gradients_in_eval_mode_and_training_is_nn_linear(monkeypatch):
    """Eval mode with autograd runs the fused op's backward: F.linear's gradients; training is nn.Linear."""
    torch.manual_seed(0)
    lin = Linear(12, 5).eval()
    x = torch.randn(4, 12, requires_grad=True)
    with torch.inference_mode():
        lin(x)  # first call in inference mode: what it caches must still serve autograd
    lin(x).square().sum().backward()
    got = (x.grad, lin.weight.grad, lin.bias.grad)
    x2 = x.detach().clone().requires_grad_()
    w2, b2 = lin.weight.detach().clone().requires_grad_(), lin.bias.detach().clone().requires_grad_()
    torch.nn.functional.linear(x2, w2, b2).square().sum().backward()
    for a, b in zip(got, (x2.grad, w2.grad, b2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(ops, "run", lambda name, *a: pytest.fail(f"training ran the fused {name}"))
    torch.testing.assert_close(lin.train()(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
    monkeypatch.undo()
    with torch.no_grad(), fastzoo.backend("reference"):
        torch.testing.assert_close(lin.eval()(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
