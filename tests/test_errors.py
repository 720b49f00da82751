"""Bad input gets a clear error naming the argument and what was expected, on every backend (the
public API checks first) and in the C++ ops called directly."""
import pytest
import torch

from fastzoo import _ext, ops
from helpers import bn_vectors, rand
from op_samples import sample


def dw_args(**over):
    a = dict(x=rand(2, 8, 9, 9), weight=rand(8, 1, 3, 3), scale=bn_vectors(8)[0], shift=bn_vectors(8)[1], stride=1,
             padding=-1, act="relu")
    a.update(over)
    return a


CASES = [
    ("dwconv_bn_act", dict(x=rand(8, 9, 9)), ValueError, r"expected input x to be 4-D"),
    ("dwconv_bn_act", dict(x=torch.randint(0, 5, (2, 8, 9, 9))), TypeError, r"input x to be float"),
    ("dwconv_bn_act", dict(weight=rand(7, 1, 3, 3)), ValueError, r"weight has 7 channels but input x has 8"),
    ("dwconv_bn_act", dict(weight=rand(8, 1, 4, 4)), ValueError, r"odd kernel size in weight, got 4"),
    ("dwconv_bn_act", dict(weight=rand(8, 1, 3, 3).double()), TypeError, r"weight to have dtype torch.float32"),
    ("dwconv_bn_act", dict(scale=rand(9)), ValueError, r"scale of shape \(8,\)"),
    ("dwconv_bn_act", dict(shift=rand(8).half()), TypeError, r"shift to have dtype torch.float32 or float32"),
    ("dwconv_bn_act", dict(stride=3), ValueError, r"stride 1 or 2, got 3"),
    ("dwconv_bn_act", dict(act="swish"), ValueError, r"unknown activation act='swish'"),
    ("dwconv_bn_act", dict(x=rand(1, 8, 1, 1), padding=0), ValueError, r"too small for kernel 3"),
]


@pytest.mark.parametrize("name,over,exc,pattern", CASES, ids=[c[3][:30] for c in CASES])
def test_dwconv_errors(impl, name, over, exc, pattern):
    a = {k: (v.to(impl.device) if isinstance(v, torch.Tensor) else v) for k, v in dw_args(**over).items()}
    with pytest.raises(exc, match=pattern):
        ops.dwconv_bn_act(**a)


def test_pwconv_errors(impl):
    d = impl.device
    x = rand(2, 8, 5, 5, device=d)
    s, b = bn_vectors(4, d)
    with pytest.raises(ValueError, match=r"weight has 6 input channels but expected 8"):
        ops.pwconv_bn_act(x, rand(4, 6, 1, 1, device=d), s, b)
    with pytest.raises(ValueError, match=r"weight of shape \(Cout, C of x\)"):
        ops.pwconv_bn_act(x, rand(4, 8, 3, 3, device=d), s, b)
    with pytest.raises(ValueError, match=r"residual of shape \(2, 4, 5, 5\)"):
        ops.pwconv_bn_act(x, rand(4, 8, 1, 1, device=d), s, b, "relu", rand(2, 4, 5, 4, device=d))
    with pytest.raises(TypeError, match=r"residual to have dtype"):
        ops.pwconv_bn_act(x, rand(4, 8, 1, 1, device=d), s, b, "relu", rand(2, 4, 5, 5, device=d).double())


def test_squeeze_excite_errors(impl):
    d = impl.device
    x = rand(2, 8, 5, 5, device=d)
    with pytest.raises(ValueError, match=r"w2 has 3 input channels but expected 2 \(Cs\)"):
        ops.squeeze_excite(x, rand(2, 8, device=d), rand(2, device=d), rand(8, 3, device=d), rand(8, device=d))
    with pytest.raises(ValueError, match=r"unknown activation gate='tanh'"):
        ops.squeeze_excite(x, rand(2, 8, device=d), rand(2, device=d), rand(8, 2, device=d), rand(8, device=d),
                           "relu", "tanh")


def test_channel_shuffle_errors(impl):
    x = rand(2, 8, 5, 5, device=impl.device)
    for g in (3, 0, -2):
        with pytest.raises(ValueError, match=rf"groups to be a positive divisor of the 8 channels of x, got groups={g}"):
            ops.channel_shuffle(x, g)


def test_block_errors(impl):
    args = list(sample("mbconv", impl.device))
    bad = list(args)
    bad[4] = rand(12, 1, 4, 4, device=impl.device)
    with pytest.raises(ValueError, match=r"mbconv: depthwise \(dw_\*\) stage: .*odd kernel size"):
        ops.mbconv(*bad)
    bad = list(args)
    bad[8] = None  # se_b1 without the rest of SE
    with pytest.raises(ValueError, match=r"se_w1, se_b1, se_w2, se_b2 must be given together; missing se_b1"):
        ops.mbconv(*bad)
    bad = list(args)
    bad[14] = 2  # stride 2 with residual
    with pytest.raises(ValueError, match=r"residual=True needs the output shape"):
        ops.mbconv(*bad)
    fargs = list(sample("fused_mbconv", impl.device))
    fargs[1] = rand(12, 5, 3, 3, device=impl.device)
    with pytest.raises(ValueError, match=r"fused_mbconv: input x has 6 channels but conv_weight \(12, 5, 3, 3\) expects 5"):
        ops.fused_mbconv(*fargs)


def test_mixed_devices():
    if not torch.cuda.is_available():
        meta = torch.empty(8, 1, 3, 3, device="meta")
        with pytest.raises(ValueError, match=r"expected weight on cpu \(the device of x\), got meta"):
            ops.dwconv_bn_act(**dw_args(weight=meta))
    else:
        with pytest.raises(ValueError, match=r"expected weight on cpu \(the device of x\), got cuda"):
            ops.dwconv_bn_act(**dw_args(weight=rand(8, 1, 3, 3, device="cuda")))


@pytest.mark.skipif(not _ext.loaded(), reason="fastzoo._C is not built")
def test_cpp_ops_check_their_arguments():
    """torch.ops.fastzoo.* called directly (no Python checks) still refuse bad input with a clear message."""
    a = dw_args()
    with pytest.raises(RuntimeError, match=r"4-D"):
        torch.ops.fastzoo.dwconv_bn_act(rand(8, 9, 9), a["weight"], a["scale"], a["shift"])
    with pytest.raises(RuntimeError, match=r"stride"):
        torch.ops.fastzoo.dwconv_bn_act(a["x"], a["weight"], a["scale"], a["shift"], 3)
    with pytest.raises(RuntimeError, match=r"activation"):
        torch.ops.fastzoo.dwconv_bn_act(a["x"], a["weight"], a["scale"], a["shift"], 1, -1, "swish")
    with pytest.raises(RuntimeError, match=r"groups"):
        torch.ops.fastzoo.channel_shuffle(a["x"], 3)
    with pytest.raises(RuntimeError, match=r"weight"):
        torch.ops.fastzoo.pwconv_bn_act(a["x"], rand(4, 5, 1, 1), rand(4), rand(4))
