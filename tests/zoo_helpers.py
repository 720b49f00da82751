"""Shared by the zoo tests: oracle models with random weights and randomized BN statistics, and the
logits comparison on the reference and the fused (auto) backend."""
import collections

import torch
from torch import nn

import fastzoo


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
    with torch.no_grad():
        model.eval()(x)
    return calls
