"""Small helpers shared by the fastzoo Triton launchers (not kernels) and the compile registry."""
import inspect
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import triton

# pointer type names used in compile signatures, by torch dtype
PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_dtype(op: str, x: torch.Tensor) -> None:
    if x.dtype not in PTR:
        raise TypeError(f"{op}: the Triton backend supports float32/float16/bfloat16 inputs, got {x.dtype}; "
                        f"use the reference or C++ backend for this dtype")


try:  # the rule of the C++ Tensor::suggest_memory_format(), shared with the reference and the fake kernels
    from ..memory_format import suggest_memory_format as _suggest
except ImportError:  # pragma: no cover - kernels loaded outside the fastzoo package
    from torch._prims_common import suggest_memory_format as _suggest


def memory_format(x: torch.Tensor):
    """x.suggest_memory_format() of the C++ API."""
    return _suggest(x) if x.dim() == 4 else torch.contiguous_format


def is_channels_last(x: torch.Tensor) -> bool:
    return memory_format(x) == torch.channels_last


def empty_like_format(x: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """An output of `shape` in suggest_memory_format(x) (channels_last in -> channels_last out)."""
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=memory_format(x))


def vec32(t: torch.Tensor) -> torch.Tensor:
    """A per-channel vector as contiguous float32 (tiny: the allowed repack of small parameters)."""
    return t.reshape(-1).to(torch.float32).contiguous()


def flat_stride(t: torch.Tensor, dims) -> Optional[int]:
    """s such that the element at flat index i over `dims` (outer to inner) sits at offset i*s, else None."""
    s = None
    inner = 1
    for d in reversed(dims):
        size = t.shape[d]
        if size != 1:
            if s is None:
                s = t.stride(d) * 1  # inner == 1 here: every inner dim has size 1
            elif t.stride(d) != s * inner:
                return None
        inner *= size
    return 1 if s is None else s


@dataclass
class KernelSpec:
    """One compiled configuration of a @triton.jit kernel: what the compile report builds."""
    name: str
    fn: object
    signature: dict
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3
    label: str = ""
    attrs: dict = field(default_factory=dict)

    def options(self) -> dict:
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


def spec(fn, ptrs: dict, constexprs: dict, num_warps: int, num_stages: int = 3, scalars: Optional[dict] = None,
         label: str = "") -> KernelSpec:
    """Builds a KernelSpec: pointer args from `ptrs`, constexprs from `constexprs`, every other arg an i32
    (or the type given in `scalars`)."""
    fn_ = fn.fn if hasattr(fn, "fn") and not hasattr(fn, "arg_names") else fn
    scalars = scalars or {}
    sig = {}
    for a in fn_.arg_names:
        if a in constexprs:
            sig[a] = "constexpr"
        elif a in ptrs:
            sig[a] = ptrs[a]
        else:
            sig[a] = scalars.get(a, "i32")
    for prm in getattr(fn_, "params", []):  # constexpr params left at their default
        if prm.is_constexpr and prm.name not in constexprs:
            if prm.default is inspect.Parameter.empty:
                raise ValueError(f"{fn_.__name__}: constexpr {prm.name} needs a value")
            constexprs = dict(constexprs, **{prm.name: prm.default})
            sig[prm.name] = "constexpr"
    missing = set(ptrs) - set(fn_.arg_names) | set(constexprs) - set(fn_.arg_names)
    if missing:
        raise ValueError(f"{fn_.__name__}: unknown args {sorted(missing)}")
    if not label:
        label = ",".join(f"{k}={v}" for k, v in constexprs.items())
    return KernelSpec(fn_.__name__, fn_, sig, dict(constexprs), num_warps, num_stages, label)


def cdiv(a: int, b: int) -> int:
    return triton.cdiv(a, b)
