"""BlockSequence: an nn.Sequential of fused blocks (same children, same state_dict keys) whose eval-mode
CPU inference runs as one C++ call.

At batch 1 the Python module path and the dispatcher cost ~50 us per block (module call, the fold-cache
check, fastzoo.ops.run, the boxed torch.ops call), as much as the math of a small block. Without autograd,
compilation, autocast or hooks, the blocks' fused ops (each child's fused_call()) are handed once to a
fastzoo._C.BlockChain, which runs the same CPU kernels in the same order with no Python between them:
the same results, bit for bit. Anything else runs the children one by one, as nn.Sequential does."""
import torch
from torch import nn

from .. import _ext, backends


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
        if not self._one_call_applies(x):
            return super().forward(x)
        leaves = _leaves(self)
        last = self.__dict__.get("_fz_last")
        if last is not None and leaves and last.still_valid(leaves):
            return run_chain(last.chain, last.calls, x)
        calls = self._fused_calls(leaves)
        if calls is None:
            return super().forward(x)
        cached = self.__dict__.get("_fz_chain")
        if cached is None or len(cached[0]) != len(calls) or not all(
                a[0] == b[0] and len(a[1]) == len(b[1]) and all(map(_same, a[1], b[1]))
                for a, b in zip(cached[0], calls)):
            cached = self.__dict__["_fz_chain"] = (calls, _build(calls))
        self.__dict__["_fz_last"] = _LastRun.of(leaves, *cached)
        return run_chain(cached[1], calls, x)

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


class _LastRun:
    """What the last one-call run was made of, checked in one pass instead of asking every block for its call
    again (~50 us less per mobilenet_v3_small forward, 2-3% at batch 1): the same leaves, each with the
    same children, no hooks, eval mode and its argument cache holding the same value (train() and a train-mode
    forward clear it), and one version key over every tensor the arguments were computed from. The same
    inputs give the blocks' caches the same arguments, so the calls and the chain are still the right ones."""
    __slots__ = ("leaves", "children", "values", "slots", "key", "calls", "chain")

    @classmethod
    def of(cls, leaves, calls, chain):
        if not all(hasattr(m, "fused_cache") and hasattr(m, "source_slots") for m in leaves):
            return None
        r = cls()
        r.leaves, r.calls, r.chain = leaves, calls, chain
        r.children = [tuple(m._modules.values()) for m in leaves]
        r.values = [m.fused_cache()._value for m in leaves]
        r.slots = [slot for m in leaves for slot in m.source_slots()]
        r.key = _ext._C.version_key([d[n] for d, n in r.slots])
        return r

    def still_valid(self, leaves):
        if len(leaves) != len(self.leaves):
            return False
        for m, leaf, children, value in zip(leaves, self.leaves, self.children, self.values):
            if (m is not leaf or m.training or m._forward_hooks or m._forward_pre_hooks
                    or m.fused_cache()._value is not value or tuple(m._modules.values()) != children):
                return False
        return _ext._C.version_key([d[n] for d, n in self.slots]) == self.key


def _global_hooks():
    from torch.nn.modules import module
    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


def _build(calls):
    chain = _ext._C.BlockChain()
    for name, args in calls:
        tensors = [a for a in args if a is None or isinstance(a, torch.Tensor)]
        ints = [int(a) for a in args if type(a) in (int, bool)]
        strs = [a for a in args if type(a) is str]
        chain.add(name, tensors, ints, strs)
    return chain
