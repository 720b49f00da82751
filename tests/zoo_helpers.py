"""Shared by the zoo tests: oracle models with random weights and randomized BN statistics, and the
logits comparison on the reference and the fused (auto) backend."""
import collections
import re

import pytest
import torch
from torch import nn

import fastzoo
from fastzoo.layers import block_sequence


def randomize_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so that BN folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
    return model


def max_rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def assert_same_logits(fz_model, oracle_model, x, backends=("reference", "auto"), tol=1e-4):
    """Eval-mode logits of the fastzoo model equal the oracle's within `tol` (max abs error relative to
    the largest logit), on each backend. Returns the errors measured."""
    fz_model.eval()
    oracle_model.eval()
    errs = {}
    with torch.no_grad():
        want = oracle_model(x)
        for b in backends:
            with fastzoo.backend(b):
                got = fz_model(x)
            assert got.shape == want.shape
            errs[b] = max_rel_err(got, want)
            assert errs[b] <= tol, f"{b}: max relative error {errs[b]:.2e} > {tol}"
    return errs


def count_params(model):
    return sum(p.numel() for p in model.parameters())

def fused_calls(model, x, monkeypatch):
    """How often each fused op runs in one eval-mode forward."""
    calls = collections.Counter()
    for name in fastzoo.ops.OP_NAMES:
        def wrap(*a, _real=getattr(fastzoo.ops, name), _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)
        monkeypatch.setattr(fastzoo.ops, name, wrap)

    def run(name, *a, _real=fastzoo.ops.run):  # the layers' entry point
        calls[name] += 1
        return _real(name, *a)
    monkeypatch.setattr(fastzoo.ops, "run", run)

    def run_chain(chain, block_calls, x, _real=block_sequence.run_chain):  # BlockSequence's one-call path
        calls.update(name for name, _ in block_calls)
        return _real(chain, block_calls, x)
    monkeypatch.setattr(block_sequence, "run_chain", run_chain)
    with torch.no_grad():
        model.eval()(x)
    return calls


def check_train_grads_and_channels_last(model, x):
    """Train mode: every parameter gets a finite gradient; eval mode: channels_last input, same logits."""
    model.train()(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model = model.eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = model(x), model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def check_weights_round_trip(name, x, tmp_path, missing_key, load_name=None, extra=(), **kwargs):
    """A state_dict, the file it is saved to, and extra(state_dict) checkpoints load into a new model (by
    `load_name`, default `name`) with identical logits; one lacking `missing_key` is a KeyError naming it.
    Returns the state_dict."""
    a = randomize_bn(fastzoo.create_model(name, **kwargs)).eval()
    sd = a.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    with torch.no_grad():
        for w in (sd, str(tmp_path / "w.pth"), *(f(sd) for f in extra)):
            assert torch.equal(a(x), fastzoo.create_model(load_name or name, weights=w, **kwargs).eval()(x))
    missing = dict(sd)
    del missing[missing_key]
    with pytest.raises(KeyError, match=r"missing keys \(1\): " + re.escape(missing_key)):
        fastzoo.create_model(name, weights=missing, **kwargs)
    return sd
