"""MobileNetV3 small/large: torchvision and timm checkpoints, training equal to torchvision's, and the whole
fused model through torch.compile, torch.export and ONNX (Runtime)."""
import pytest
import torch

import fastzoo
from zoo_helpers import assert_same_logits, fused_calls, max_rel_err, randomize_bn

tvm = pytest.importorskip("torchvision.models")


@pytest.mark.parametrize("name,tv_name", [("mobilenetv3_small", "mobilenet_v3_small"),
                                          ("mobilenetv3_large", "mobilenet_v3_large")])
def test_same_logits_as_torchvision(name, tv_name):
    torch.manual_seed(0)
    tv = randomize_bn(getattr(tvm, tv_name)())
    fz = fastzoo.create_model(tv_name, weights=tv.state_dict())
    assert_same_logits(fz, tv, torch.randn(1, 3, 161, 199))
    assert_same_logits(fz, tv, torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last))


def test_same_logits_as_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    tm = randomize_bn(timm.create_model("mobilenetv3_small_100"))
    fz = fastzoo.create_model("mobilenetv3_small_100", weights=tm.state_dict())
    assert_same_logits(fz, tm, torch.randn(1, 3, 97, 83))


def test_triton_interpreter_gives_the_same_logits():
    """The whole model on the Triton kernels (the interpreter on CPU; compiled kernels where a GPU is)."""
    if fastzoo.backends.unavailable_reason("triton", "cpu"):
        pytest.skip(fastzoo.backends.unavailable_reason("triton", "cpu"))
    torch.manual_seed(0)
    tv = randomize_bn(tvm.mobilenet_v3_small(num_classes=10))
    fz = fastzoo.mobilenetv3_small(num_classes=10, weights=tv.state_dict())
    errs = assert_same_logits(fz, tv, torch.randn(1, 3, 33, 29), backends=("triton",))
    assert errs["triton"] < 1e-4


def test_eval_runs_the_fused_blocks(monkeypatch):
    fz = fastzoo.mobilenetv3_small()
    calls = fused_calls(fz, torch.randn(1, 3, 64, 64), monkeypatch)
    assert calls["mbconv"] == 11 and calls["pwconv_bn_act"] == 1 + 2  # 1x1 head, the two classifier linears


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_training_loss_and_gradients_equal_torchvision(name):
    """Train mode (batch statistics, dropout off): loss and every parameter gradient equal torchvision's."""
    torch.manual_seed(0)
    tv = randomize_bn(getattr(tvm, name)(num_classes=10, dropout=0.0)).train()
    kw = {"drop_path_rate": 0.0} if name.startswith("efficientnet") else {}
    fz = fastzoo.create_model(name, weights=tv.state_dict(), num_classes=10, dropout=0.0, **kw).train()
    if name.startswith("efficientnet"):
        for m in tv.modules():
            if type(m).__name__ == "StochasticDepth":
                m.p = 0.0
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    loss_fz = torch.nn.functional.cross_entropy(fz(x), y)
    loss_tv = torch.nn.functional.cross_entropy(tv(x), y)
    loss_fz.backward()
    loss_tv.backward()
    torch.testing.assert_close(loss_fz, loss_tv, rtol=1e-4, atol=1e-6)
    tv_grads = {n: p.grad for n, p in tv.named_parameters()}
    # Some true gradients are ~0 (a BN shift followed by another BN): compare against the model's scale too.
    # 3e-5 of it: float32 summation order alone (the SE FCs as GEMMs instead of dot products) moved
    # efficientnet_b0's worst depthwise-weight gradient to 1.3e-5 of the scale; a wrong gradient is off by O(1).
    scale = max(g.abs().max().item() for g in tv_grads.values())
    for n, p in fz.named_parameters():
        torch.testing.assert_close(p.grad, tv_grads[n], rtol=1e-4, atol=3e-5 * scale, msg=n)


def test_compile_and_export_whole_fused_model():
    torch.manual_seed(0)
    fz = randomize_bn(fastzoo.mobilenetv3_small()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = fz(x)
        got = torch.compile(fz, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ep = torch.export.export(fz, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    if fastzoo.backends.resolve("cpu") == "cpu":
        assert sum(t.startswith("fastzoo.mbconv") for t in targets) == 11
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), want, rtol=1e-5, atol=1e-5)


def test_onnx_export_and_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import io
    import warnings
    torch.manual_seed(0)
    fz = randomize_bn(fastzoo.mobilenetv3_small()).eval()
    x = torch.randn(1, 3, 64, 64)
    buf = io.BytesIO()
    with fastzoo.backend("reference"), warnings.catch_warnings():  # the ops decompose to reference math
        warnings.simplefilter("ignore")
        torch.onnx.export(fz, (x,), buf, input_names=["x"], dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    with torch.no_grad():
        assert max_rel_err(got, fz(x)) < 1e-4


def test_bad_input_is_named():
    fz = fastzoo.mobilenetv3_small().eval()
    with pytest.raises((RuntimeError, ValueError), match="input x has 4 channels"):
        fz(torch.randn(1, 4, 32, 32))
    with torch.no_grad(), pytest.raises((RuntimeError, ValueError), match="input x has 4 channels"):
        fz(torch.randn(1, 4, 32, 32))  # the one-call BlockChain path
    with pytest.raises((RuntimeError, ValueError), match="4"):
        fz(torch.randn(3, 32, 32))
    with pytest.raises((RuntimeError, TypeError), match="(?i)float"):
        fz(torch.randint(0, 255, (1, 3, 32, 32)))  # uint8 images must be converted (and normalized) first
    with pytest.raises(KeyError, match="missing keys .*features.0.0.weight"):
        fastzoo.mobilenetv3_small(weights={k: v for k, v in fz.state_dict().items() if k != "features.0.0.weight"})
    with pytest.raises(KeyError, match="unexpected keys .*extra"):
        fastzoo.mobilenetv3_small(weights={**fz.state_dict(), "extra": torch.zeros(1)})


def test_checkpoint_file_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fastzoo.mobilenetv3_small(weights=str(missing))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth.*corrupt"):
        fastzoo.mobilenetv3_small(weights=str(bad))
    good = tmp_path / "good.pth"
    fz = fastzoo.mobilenetv3_small()
    torch.save({"model": fz.state_dict()}, good)
    fastzoo.mobilenetv3_small(weights=str(good))


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="unknown model name 'mobilenetv3_smal'.*mobilenetv3_small"):
        fastzoo.create_model("mobilenetv3_smal")
