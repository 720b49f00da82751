"""GoogLeNet and Inception V3 against torchvision: state_dicts load unchanged (with or without the auxiliary
heads), same logits on the reference and the fused backend, auxiliary outputs in train mode."""
import pytest
import torch

from fastzoo.models import create_model
from zoo_helpers import assert_same_logits, count_params, randomize_bn

tvm = pytest.importorskip("torchvision.models")


def _oracle(name, **kw):
    torch.manual_seed(0)
    return randomize_bn(getattr(tvm, name)(init_weights=True, **kw)).eval()


def test_googlenet_same_logits_and_aux():
    oracle = _oracle("googlenet", aux_logits=True, num_classes=10)
    fz = create_model("googlenet", weights=oracle.state_dict(), num_classes=10)  # aux tensors dropped
    assert count_params(fz) < count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 67, 53))
    assert_same_logits(fz, oracle, torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    fz = create_model("googlenet", weights=oracle.state_dict(), num_classes=10, aux_logits=True).eval()
    assert count_params(fz) == count_params(oracle)
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    want = oracle(x)
    torch.manual_seed(1)  # the same dropout masks: both draw them in the same order (aux1, aux2, head)
    got = fz(x)
    assert type(got).__name__ == "GoogLeNetOutputs" and len(got) == 3
    for got, want in zip(got, want):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_inception_v3_same_logits():
    oracle = _oracle("inception_v3", aux_logits=False, num_classes=10)
    fz = create_model("inception_v3", weights=oracle.state_dict(), num_classes=10)
    assert count_params(fz) == count_params(oracle)
    assert_same_logits(fz, oracle, torch.randn(1, 3, 79, 77))


def test_inception_v3_aux_train_mode_and_structure():
    with torch.device("meta"):
        oracle, fz = tvm.inception_v3(init_weights=False), create_model("inception_v3", aux_logits=True)
    assert {k: v.shape for k, v in fz.state_dict().items()} == {k: v.shape for k, v in oracle.state_dict().items()}
    oracle = _oracle("inception_v3", aux_logits=True, num_classes=10, transform_input=True, dropout=0.0)
    fz = create_model("inception_v3", weights=oracle.state_dict(), num_classes=10, aux_logits=True,
                      transform_input=True, dropout=0.0)
    fz.train(), oracle.train()
    x = torch.randn(2, 3, 79, 77)  # train mode without the aux head: it needs 299x299 input
    aux = oracle.AuxLogits
    fz.aux_logits, oracle.AuxLogits = False, None
    torch.testing.assert_close(fz(x), oracle(x).logits, rtol=1e-4, atol=1e-4)
    h = torch.randn(2, 768, 17, 17)  # the aux head alone, at its 299x299 input size
    torch.testing.assert_close(fz.AuxLogits(h), aux(h), rtol=1e-4, atol=1e-4)
