"""BlockSequence: eval-mode CPU inference without autograd runs the blocks' fused ops as one C++ call
(fastzoo._C.BlockChain); everything else runs the children one by one. Both give the same logits."""
import gc
import weakref

import pytest
import torch

import fastzoo
from fastzoo.layers import BlockSequence, block_sequence
from fastzoo import _ext
from helpers import num_threads
from zoo_helpers import randomize_bn

pytestmark = pytest.mark.skipif(not fastzoo._ext.loaded(), reason="fastzoo._C is not built")


def close(actual, expected):
    """float32 logits computed in another order: 1e-5 relative, 1e-6 of the largest absolute."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())


@pytest.fixture
def chain_runs(monkeypatch):
    """How many times the one-call path ran."""
    runs = []

    def run_chain(chain, calls, x, _real=block_sequence.run_chain):
        runs.append([name for name, _ in calls])
        return _real(chain, calls, x)
    monkeypatch.setattr(block_sequence, "run_chain", run_chain)
    return runs


# 224x224 at batch 1: the paths the chain's prepacked weights take at that size (strips, the channel split of
# the 7x7 blocks with the SE gate applied to packed panels, the untiled path)
@pytest.mark.parametrize("name,shape", [("mobilenetv3_small", (2, 3, 67, 61)), ("mobilenetv2", (2, 3, 67, 61)),
                                        ("efficientnet_b0", (2, 3, 67, 61)), ("efficientnet_v2_s", (2, 3, 67, 61)),
                                        ("mobilenetv3_large", (1, 3, 224, 224)), ("efficientnet_b0", (1, 3, 224, 224))])
def test_one_call_equals_the_blocks_one_by_one(name, shape, chain_runs):
    m = randomize_bn(fastzoo.create_model(name)).eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        y = m(x)
    assert len(chain_runs) == 1 and {"mbconv", "fused_mbconv"} & set(chain_runs[0])
    assert isinstance(m.features, BlockSequence)
    y_blocks = m(x).detach()  # grad enabled: block by block (the ops' autograd is in reach)
    assert len(chain_runs) == 1
    # the classifier head ran in the chain too: its pool sums in another order than ATen's on an NCHW map, and
    # its activation (mobilenet_v3's hardswish) in the linear's epilogue rounds apart from nn.Hardswish's
    assert chain_runs[0][-2:] == ["global_avg_pool", "pwconv_bn_act"] or chain_runs[0][-3] == "global_avg_pool"
    close(y, y_blocks)
    with torch.inference_mode():
        features = m.features(x)
    assert torch.equal(features, m.features(x).detach()), "same kernels, same order: bit-identical"


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet_b0"])
def test_bf16_one_call_equals_the_blocks_one_by_one(name, chain_runs):
    """A bf16 model (its 1x1 convs through the bf16 GEMM where the CPU has AVX512-BF16, packed once by the
    chain): the chain gives the features the blocks give one by one, and logits near the float32 model's."""
    m = randomize_bn(fastzoo.create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 67, 61)
    xb = x.to(torch.bfloat16)
    with torch.inference_mode():
        expected = m(x)
    m = m.to(torch.bfloat16)
    with torch.inference_mode():
        y = m(xb)
        features = m.features(xb)
    assert len(chain_runs) == 3 and y.dtype == torch.bfloat16
    assert chain_runs[1][-2:] == ["global_avg_pool", "pwconv_bn_act"], "the classifier head ran in the chain"
    assert torch.equal(features, m.features(xb).detach()), "same kernels, same order: bit-identical"
    assert len(chain_runs) == 3
    assert ((y.float() - expected).abs().max() / expected.abs().max()).item() < 3e-2


def test_outputs_are_the_callers_while_the_chain_reuses_its_buffers(chain_runs):
    """Between blocks the chain writes into two buffers it keeps; the output it returns is never one of them."""
    m = randomize_bn(fastzoo.create_model("mobilenetv3_small")).eval()
    x1, x2 = torch.randn(2, 3, 64, 64), torch.randn(3, 3, 80, 72)
    with torch.inference_mode():
        y1 = m.features(x1)
        kept = y1.clone()
        y2 = m.features(x2)  # larger: the buffers grow
        y1_again = m.features(x1)
    assert len(chain_runs) == 3
    assert torch.equal(y1, kept), "a later run must not write into an earlier output"
    assert torch.equal(y1_again, kept) and y2.shape[0] == 3


def test_falls_back_to_the_blocks_for_hooks_training_and_reference(chain_runs):
    m = randomize_bn(fastzoo.create_model("mobilenetv3_small")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = m(x)
        assert len(chain_runs) == 1
        seen = []
        handle = m.features[3].register_forward_hook(lambda mod, i, o: seen.append(o.shape))
        close(m(x), expected)
        assert seen and len(chain_runs) == 1, "a hooked block runs as a module, its hook fires"
        handle.remove()
        with fastzoo.backend("reference"):
            torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
        assert len(chain_runs) == 1
        m.features.train()
        m.features(x)
        assert len(chain_runs) == 1


def test_the_chain_follows_weight_changes(chain_runs):
    m = randomize_bn(fastzoo.create_model("mobilenetv3_small")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = m(x)
        m.features[5].block[1].bn.weight.mul_(3)  # in place: the block's arguments are refolded
        after = m(x)
        torch.set_grad_enabled(True)
        try:
            expected = m(x)
        finally:
            torch.set_grad_enabled(False)
    assert len(chain_runs) == 2
    assert not torch.allclose(before, after)
    close(after, expected)


def test_the_chain_follows_what_no_version_counter_sees(chain_runs):
    """Running statistics a train-mode forward updated in place (no _version bump), a replaced activation
    module, a reassigned buffer: the next one-call run uses them, though no source tensor's version moved."""
    m = randomize_bn(fastzoo.create_model("mobilenetv3_small")).eval()
    f, x = m.features, torch.randn(2, 3, 64, 64)

    def one_call():
        runs = len(chain_runs)
        y = f(x)
        assert len(chain_runs) == runs + 1
        with torch.enable_grad():  # block by block
            torch.testing.assert_close(y, f(x).detach(), rtol=0, atol=0)
        return y

    with torch.no_grad():
        before = one_call()
        assert torch.equal(one_call(), before)
        f[4].train()
        f[4](f[:4](x) * 3)  # block 4's BN running statistics move
        f[4].eval()
        after_stats = one_call()
        assert not torch.allclose(after_stats, before)
        f[0][2] = torch.nn.ReLU(inplace=True)  # the stem's hardswish replaced
        after_act = one_call()
        assert not torch.allclose(after_act, after_stats)
        f[12].bn.running_var = torch.rand_like(f[12].bn.running_var) + 0.5
        assert not torch.allclose(one_call(), after_act)


def test_a_hook_on_a_stage_after_a_one_call_run(chain_runs):
    """A hook registered on a nested stage (nn.Sequential) after the one-call path ran: the blocks run one by
    one and the hook fires; removed, the one-call path runs again."""
    m = randomize_bn(fastzoo.create_model("efficientnet_b0")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = m(x)
        seen = []
        handle = m.features[2].register_forward_hook(lambda mod, i, o: seen.append(o.shape))
        close(m(x), expected)
        assert seen and len(chain_runs) == 1
        handle.remove()
        torch.testing.assert_close(m(x), expected, rtol=0, atol=0)
    assert len(chain_runs) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["pwconv_bn_act", "dwconv_bn_act"])
def test_the_chain_packs_weights_again_when_they_change(op, dtype):
    """The chain keeps its 1x1 and depthwise convs' weights packed from run to run (bf16 1x1 weights as the bf16
    GEMM's pairs, where the CPU has AVX512-BF16; bf16 depthwise weights as float32 (K*K, C)) and its other tensor
    arguments copied (the scale and shift); an in-place change (a _version bump) or new storage (.data =) has them
    packed or copied again."""
    shape, ints = ((40, 24, 1, 1), []) if op == "pwconv_bn_act" else ((24, 1, 3, 3), [1, -1])
    w, sc, sh = torch.randn(shape, dtype=dtype), torch.rand(shape[0]) + 0.5, torch.randn(shape[0])
    x = torch.randn(1, 24, 14, 14, dtype=dtype).contiguous(memory_format=torch.channels_last)
    chain = fastzoo._ext._C.BlockChain()
    chain.add(op, [w, sc, sh] + ([None] if op == "pwconv_bn_act" else []), ints, ["relu"])
    with torch.no_grad():
        new_storage = lambda: setattr(w, "data", torch.randn(shape, dtype=dtype))  # noqa: E731
        new_shift = lambda: setattr(sh, "data", torch.randn(shape[0]))  # noqa: E731
        for change in (lambda: None, lambda: w.mul_(-2), new_storage, lambda: sc.mul_(1.5), new_shift):
            change()
            expected = getattr(torch.ops.fastzoo, op)(x, w, sc, sh, *ints, "relu")
            torch.testing.assert_close(chain.run(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("layout,dtype", [("channels_last", torch.float32), ("nchw", torch.float32),
                                          ("channels_last", torch.float64), ("channels_last", torch.bfloat16),
                                          ("nchw", torch.bfloat16)])
def test_block_chain_global_avg_pool(layout, dtype):
    """The head's pool step: its own loop on dense channels_last float32 and bf16 (summed in float32, rounded
    once: within half a bf16 step of the float64 mean, where comparing with that mean rounded to bf16 could
    differ by a whole step at a tie), ATen's mean otherwise."""
    chain = fastzoo._ext._C.BlockChain()
    chain.add("global_avg_pool", [], [], [])
    x = (torch.randn(3, 37, 7, 5) + 4).to(dtype)  # a mean far from 0: bf16 rounding of partial sums would show
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = chain.run(x)
    assert y.shape == (3, 37, 1, 1) and y.dtype == dtype
    mean = x.double().mean((2, 3), keepdim=True)
    if dtype == torch.bfloat16:  # one rounding of a float32 sum: within half a bf16 step (2^-8 relative) of it
        torch.testing.assert_close(y.double(), mean, rtol=2**-8 + 1e-6, atol=0)
    else:
        torch.testing.assert_close(y, mean.to(dtype))


_ACTS = {"identity": lambda v: v, "silu": torch.nn.functional.silu, "hardswish": torch.nn.functional.hardswish,
         "relu6": torch.nn.functional.relu6}


def _head_chain(cin, cmid, cout, act1, act2, residual=None):
    """A chain of a classifier head's steps (1x1 conv + BN + act, the pool, a Linear as a 1x1 conv + act) with
    random weights, and its float64 oracle."""
    g = torch.Generator().manual_seed(cin * cmid + cout)
    w1 = torch.randn(cmid, cin, 1, 1, generator=g) / cin**0.5
    w2 = torch.randn(cout, cmid, 1, 1, generator=g) / cmid**0.5
    sc1, sh1 = torch.rand(cmid, generator=g) + 0.5, torch.randn(cmid, generator=g)
    sc2, sh2 = torch.rand(cout, generator=g) + 0.5, torch.randn(cout, generator=g)
    chain = fastzoo._ext._C.BlockChain()
    chain.add("pwconv_bn_act", [w1, sc1, sh1, None], [], [act1])
    chain.add("global_avg_pool", [], [], [])
    chain.add("pwconv_bn_act", [w2, sc2, sh2, residual], [], [act2])

    def oracle(x):
        d = lambda t: t.double()
        h = torch.einsum("nchw,oc->nohw", d(x), d(w1.flatten(1)))
        h = _ACTS[act1](h * d(sc1)[:, None, None] + d(sh1)[:, None, None])
        y = torch.einsum("nc,oc->no", h.mean((2, 3)), d(w2.flatten(1))) * d(sc2) + d(sh2)
        y = y[:, :, None, None] + (d(residual) if residual is not None else 0)
        return _ACTS[act2](y).float()
    return chain, oracle, w2


def _profiled_names(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = fn()
    return y, {e.name for e in prof.events()}


# A classifier head runs as one head_pool_linear where its input is float32 channels_last and small (up to 64 Ki
# floats: batch 1 of the zoo's heads); otherwise step by step. Channel counts off the 16-channel panels, odd maps.
@pytest.mark.parametrize("n,cin,cmid,cout,hw,act1,act2,fused", [
    (1, 19, 40, 37, (5, 3), "silu", "identity", True),
    (2, 24, 64, 1000, (7, 7), "hardswish", "hardswish", True),
    (1, 3, 17, 5, (1, 1), "relu6", "identity", True),
    (1, 1400, 32, 10, (7, 7), "silu", "identity", False),  # 68600 input floats
])
@pytest.mark.parametrize("threads", [1, 2])
def test_block_chain_fused_head(n, cin, cmid, cout, hw, act1, act2, fused, threads):
    chain, oracle, w2 = _head_chain(cin, cmid, cout, act1, act2)
    x = torch.randn(n, cin, *hw).contiguous(memory_format=torch.channels_last)
    with num_threads(threads), torch.no_grad():
        y, names = _profiled_names(lambda: chain.run(x))
        assert y.shape == (n, cout, 1, 1) and y.is_contiguous()
        close(y, oracle(x))
        assert ("fastzoo::chain::head_pool_linear" in names) == fused
        assert ("fastzoo::chain::global_avg_pool" in names) == (not fused)
        torch.testing.assert_close(chain.run(x), y, rtol=0, atol=0)  # the same tasks, summed in the same order
        w2.mul_(-0.5)  # in place: the transposed copy is made again
        close(chain.run(x), oracle(x))
        if fused:  # NCHW or a strided view: step by step, the same values
            for other in (x.contiguous(), x.transpose(2, 3).contiguous().transpose(2, 3)):
                y2, names = _profiled_names(lambda: chain.run(other))
                close(y2, oracle(x))
                assert ("fastzoo::chain::head_pool_linear" in names) == other.is_contiguous(
                    memory_format=torch.channels_last)  # a 1x1 map is both


def test_block_chain_fused_head_stolen_order():
    """Which thread runs which task does not change the logits: each task has its own partial sums."""
    chain, oracle, _ = _head_chain(40, 200, 37, "silu", "identity")
    x = torch.randn(1, 40, 7, 7).contiguous(memory_format=torch.channels_last)
    with num_threads(1), torch.no_grad():
        y = chain.run(x)
        _ext._C.set_simulated_stealing(True)
        try:
            torch.testing.assert_close(chain.run(x), y, rtol=0, atol=0)
        finally:
            _ext._C.set_simulated_stealing(False)
        close(y, oracle(x))


def test_block_chain_head_with_a_residual_runs_step_by_step():
    res = torch.randn(1, 37, 1, 1)
    chain, oracle, _ = _head_chain(19, 40, 37, "silu", "identity", residual=res)
    x = torch.randn(1, 19, 5, 3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y, names = _profiled_names(lambda: chain.run(x))
    close(y, oracle(x))
    assert "fastzoo::chain::head_pool_linear" not in names


def test_block_chain_rejects_bad_steps():
    chain = fastzoo._ext._C.BlockChain()
    w = torch.randn(8, 8, 1, 1)
    with pytest.raises(RuntimeError, match="unknown op 'conv9'"):
        chain.add("conv9", [w], [], [])
    with pytest.raises(RuntimeError, match="pwconv_bn_act takes 4 tensors, 0 ints and 1 strings after x, got 3"):
        chain.add("pwconv_bn_act", [w, torch.ones(8), torch.zeros(8)], [], ["relu"])
    chain.add("pwconv_bn_act", [w, torch.ones(8), torch.zeros(8), None], [], ["relu"])
    with pytest.raises(RuntimeError, match="input x has 4 channels|expected weight of shape"):
        chain.run(torch.randn(1, 4, 3, 3))  # the op's own checks run inside the chain


def test_the_classifier_head_runs_in_the_chain_until_it_cannot(chain_runs):
    """The pool, dropout, linears and the activation between them run as the chain's last steps; a hook on the
    head, a module the chain does not run, a replaced or changed weight: the next forward follows."""
    m = randomize_bn(fastzoo.create_model("mobilenetv3_small")).eval()
    x = torch.randn(2, 3, 64, 64)

    def expected():
        with torch.enable_grad():  # module by module
            return m(x).detach()

    with torch.no_grad():
        y = m(x)
        assert chain_runs[-1][-3:] == ["global_avg_pool", "pwconv_bn_act", "pwconv_bn_act"]
        close(y, expected())
        seen = []
        handle = m.classifier[0].register_forward_hook(lambda mod, i, o: seen.append(o.shape))
        close(m(x), y)
        assert seen == [(2, 1024)] and "global_avg_pool" not in chain_runs[-1], "the head ran as modules"
        handle.remove()
        m.classifier[3].weight.mul_(2)  # in place
        close(m(x), expected())
        assert "global_avg_pool" in chain_runs[-1]
        m.classifier[3].weight = torch.nn.Parameter(torch.randn_like(m.classifier[3].weight))  # replaced
        close(m(x), expected())
        m.classifier[1] = torch.nn.GELU()  # not an activation the chain fuses: the head runs as modules
        runs = len(chain_runs)
        close(m(x), expected())
        assert len(chain_runs) == runs + 1 and "global_avg_pool" not in chain_runs[-1]


def test_inference_mode_then_no_grad():
    """The chain's buffers, first made in inference mode, are written again by a run outside it."""
    m = randomize_bn(fastzoo.create_model("mobilenetv2")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        y = m(x)
    with torch.no_grad():
        torch.testing.assert_close(m(x), y, rtol=0, atol=0)
        torch.testing.assert_close(m.features(x), m.features(x), rtol=0, atol=0)


def test_the_one_call_guard_sees_global_state(chain_runs, monkeypatch):
    """After a one-call run, a global forward hook, FASTZOO_BACKEND=reference, autocast or autograd send the
    next forward the module way; with them gone the chain runs again."""
    m = randomize_bn(fastzoo.create_model("efficientnet_b0")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = m(x)
        runs = len(chain_runs)

        def module_way(why):
            y = m(x)
            assert len(chain_runs) == runs, why
            return y

        seen = []
        handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, i, o: seen.append(type(mod)))
        close(module_way("global hook"), expected)
        assert seen
        handle.remove()
        with fastzoo.backend("reference"):
            torch.testing.assert_close(module_way("reference backend"), expected, rtol=1e-4, atol=1e-5)
        monkeypatch.setattr(fastzoo.backends, "_current", None)  # no backend set: FASTZOO_BACKEND decides
        monkeypatch.setenv("FASTZOO_BACKEND", "reference")
        torch.testing.assert_close(module_way("FASTZOO_BACKEND"), expected, rtol=1e-4, atol=1e-5)
        monkeypatch.delenv("FASTZOO_BACKEND")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module_way("autocast")
        with torch.enable_grad():
            close(module_way("autograd").detach(), expected)
        torch.testing.assert_close(m(x), expected, rtol=0, atol=0)
        assert len(chain_runs) == runs + 1


def test_a_deleted_model_is_collected(chain_runs):
    """The one-call path's guard lives in the BlockSequence's __dict__ and holds that sequence and the head: a
    cycle the garbage collector sees through the guard's tp_traverse, so it frees the model once nothing else
    holds it."""
    m = fastzoo.create_model("mobilenetv3_small").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        m(x)
        m(x)  # the second forward goes through the guard
    assert len(chain_runs) == 2 and "_fz_last_head" in m.features.__dict__
    alive = [weakref.ref(o) for o in (m, m.features, m.classifier, m.features[1])]
    del m
    gc.collect()
    assert [r() is None for r in alive] == [True, True, True, True]
