"""BlockSequence: an nn.Sequential of fused blocks (same children, same state_dict keys) whose eval-mode
CPU inference runs as one C++ call.

At batch 1 the Python module path and the dispatcher cost ~50 us per block (module call, the fold-cache
check, fastzoo.ops.run, the boxed torch.ops call), as much as the math of a small block. Without autograd,
compilation, autocast or hooks, the blocks' fused ops (each child's fused_call()) are handed once to a
fastzoo._C.BlockChain, which runs the same CPU kernels in the same order with no Python between them:
the same results, bit for bit. Anything else runs the children one by one, as nn.Sequential does.

forward_with_head() runs the classifier head in the same call (global average pool, then Dropout, Linear and
the activation after a Linear): Python right after the chain's kernels runs cold, and the head's modules cost
0.1-0.3 ms per batch-1 forward (head in the chain against head as modules, in-process A/B: mobilenet_v3_small
0.92x, v3_large 0.95x, v2 0.95x, efficientnet_b0 0.97x).

A later forward reruns the last chain after one C++ call (fastzoo._C.ChainGuard) has checked that nothing it
was built from changed. Run cold after the previous forward's kernels, the checks cost most of what a batch-1
forward spends outside the chain: a model's forward minus its bare chain run, mobilenet_v2 0.46 ms with the
checks in Python, 0.19 ms in C++ (mobilenet_v3_small 0.22 -> 0.19 ms)."""
import torch
from torch import nn

from .. import _ext, backends
from .linear import _const


def _leaves(seq):
    """The blocks of seq, nested plain nn.Sequential stages flattened; None if a container has hooks."""
    out = []
    for m in seq._modules.values():
        if type(m) is nn.Sequential:
            if m._forward_hooks or m._forward_pre_hooks:
                return None
            sub = _leaves(m)
            if sub is None:
                return None
            out += sub
        else:
            out.append(m)
    return out


def _same(a, b):
    return a is b or (type(a) in (int, bool, str) and type(a) is type(b) and a == b)


def run_chain(chain, calls, x):
    """Runs the chain (built from calls: (op name, args) per block); the seam tests count ops through."""
    return chain.run(x)


class BlockSequence(nn.Sequential):
    """nn.Sequential whose eval-mode CPU inference runs its blocks' fused ops in one BlockChain call."""

    def forward(self, x):
        y = self.run_if_unchanged(x)
        if y is None:
            y = self._one_call(x, ())
        return super().forward(x) if y is None else y

    def forward_with_head(self, x, head):
        """The head's modules (an nn.AdaptiveAvgPool2d(1), then modules or nn.Sequentials of nn.Dropout,
        nn.Linear and activations) applied to self(x) and flattened to (N, C), in the same BlockChain call; None
        where that does not apply (training, hooks, another head): the caller runs the modules then."""
        return self._one_call(x, tuple(head))

    def run_if_unchanged(self, x, head=(), model=None):
        """The last one-call run again, on x, where nothing it was built from has changed (one C++ check:
        fastzoo._C.ChainGuard); else None. model: x is that module's input, taken channels_last first as
        fastzoo.models._common.to_channels_last_for_inference does."""
        last = self.__dict__.get("_fz_last_head" if head else "_fz_last")
        if last is None or torch.compiler.is_compiling():
            return None
        xc = last.guard.input(x, head, model)
        return None if xc is None else _finish(run_chain(last.chain, last.calls, xc), head)

    def _one_call(self, x, head):
        if not self._one_call_applies(x):
            return None
        leaves = _leaves(self)
        calls = self._fused_calls(leaves)
        plan = _head_plan(head) if head else ((), [], [])
        if calls is None or plan is None:
            return None
        calls = calls + plan[1]
        # with and without a head: a chain and a last run each
        last_key, chain_key = ("_fz_last_head", "_fz_chain_head") if head else ("_fz_last", "_fz_chain")
        cached = self.__dict__.get(chain_key)
        if cached is None or len(cached[0]) != len(calls) or not all(
                a[0] == b[0] and len(a[1]) == len(b[1]) and all(map(_same, a[1], b[1]))
                for a, b in zip(cached[0], calls)):
            cached = self.__dict__[chain_key] = (calls, _build(calls))
        self.__dict__[last_key] = _LastRun.of(self, leaves, head, plan, *cached)
        return _finish(run_chain(cached[1], calls, x), head)

    def _one_call_applies(self, x):
        return not (self.training or torch.compiler.is_compiling() or torch.is_grad_enabled()
                    or type(x) is not torch.Tensor or x.device.type != "cpu" or torch.is_autocast_enabled("cpu")
                    or self._forward_hooks or self._forward_pre_hooks or _global_hooks()
                    or not backends.cpu_kernels_in_use())

    @staticmethod
    def _fused_calls(leaves):
        """Each block's (op name, args), or None where the one-call path does not apply."""
        if not leaves:
            return None
        calls = []
        for m in leaves:
            fused_call = getattr(m, "fused_call", None)
            if fused_call is None or m.training or m._forward_hooks or m._forward_pre_hooks:
                return None
            call = fused_call()
            if call is None:
                return None
            calls.append(call)
        return calls


_HEAD_ACTS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
              nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}


def _head_plan(head):
    """(the head's modules, containers included; its chain steps; the (dict, name) slots its steps are made
    from), or None where the chain cannot run it."""
    pool, *rest = head
    if type(pool) is not nn.AdaptiveAvgPool2d or pool.output_size not in (1, (1, 1)):
        return None
    mods, seq = [pool], []
    for m in rest:
        if type(m) is nn.Sequential:
            mods.append(m)
            seq += list(m)
        else:
            seq.append(m)
    mods += seq
    if any(m.training or m._forward_hooks or m._forward_pre_hooks for m in mods):
        return None
    calls, slots, i = [("global_avg_pool", ())], [], 0
    while i < len(seq):
        m = seq[i]
        i += 1
        if type(m) is nn.Dropout:  # eval mode: the identity
            continue
        w = m.weight if isinstance(m, nn.Linear) else None
        if w is None or w.dtype not in (torch.float32, torch.bfloat16) or w.device.type != "cpu":
            return None
        act = "identity"
        if i < len(seq) and type(seq[i]) in _HEAD_ACTS:
            act = _HEAD_ACTS[type(seq[i])]
            i += 1
        o = w.shape[0]
        shift = m.bias if m.bias is not None else _const(0.0, o)
        calls.append(("pwconv_bn_act", (w.reshape(o, -1, 1, 1), _const(1.0, o), shift, act, None)))
        slots += [(m._parameters, "weight"), (m._parameters, "bias")]
    return mods, calls, slots


def _finish(y, head):
    return y.flatten(1) if head else y


class _LastRun:
    """The last one-call run's chain and calls, and the guard (fastzoo._C.ChainGuard) that tells whether they
    still apply, in one C++ call instead of asking every block for its call again: no autograd, autocast,
    tracing or hooks (global or on this sequence, its nested stages, its leaves and the head), the cpu backend,
    eval mode, the same children of every watched module, the same head, each leaf's argument cache holding the
    same value (train() and a train-mode forward clear it) and one version key over every tensor the
    arguments were computed from. The same inputs give the blocks' caches the same arguments, so the calls and
    the chain are still the right ones."""
    __slots__ = ("calls", "chain", "guard")

    @classmethod
    def of(cls, seq, leaves, head, plan, calls, chain):
        if not all(hasattr(m, "fused_cache") and hasattr(m, "source_slots") for m in leaves):
            return None
        r = cls()
        r.calls, r.chain = calls, chain
        watched = [(seq, True)] + [(s, False) for s in _stages(seq)] + [(m, True) for m in [*leaves, *plan[0]]]
        caches = [(m.fused_cache(), m.fused_cache()._value) for m in leaves]
        slots = [slot for m in leaves for slot in m.source_slots()] + plan[2]
        r.guard = _ext._C.ChainGuard(watched, caches, list(head), slots, vars(backends), _global_hook_dicts())
        return r


def _stages(seq):
    """The plain nn.Sequential stages nested in seq, at any depth."""
    for m in seq._modules.values():
        if type(m) is nn.Sequential:
            yield m
            yield from _stages(m)


def _global_hook_dicts():
    """torch's registries of forward hooks on every module (mutated in place, never rebound)."""
    from torch.nn.modules import module
    return [module._global_forward_hooks, module._global_forward_pre_hooks]


def _global_hooks():
    return any(_global_hook_dicts())


def _build(calls):
    chain = _ext._C.BlockChain()
    for name, args in calls:
        tensors = [a for a in args if a is None or isinstance(a, torch.Tensor)]
        ints = [int(a) for a in args if type(a) in (int, bool)]
        strs = [a for a in args if type(a) is str]
        chain.add(name, tensors, ints, strs)
    return chain
