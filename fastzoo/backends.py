"""Which implementation runs the fused ops: auto, reference, cpu, cuda or triton.

`auto` picks per device from what is built: CPU tensors -> cpu (C++ kernels) when fastzoo._C is built,
CUDA tensors -> cuda kernels, else triton, else reference. fastzoo.set_backend(name), the context
manager fastzoo.backend(name) and the environment variable FASTZOO_BACKEND override it.
"""
import contextlib
import os

from . import _ext

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

_current = None  # None: take FASTZOO_BACKEND (default auto)


def _check_name(name, source="backend"):
    if name not in BACKENDS:
        raise ValueError(f"fastzoo: unknown {source} {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


# Every fused op call reads FASTZOO_BACKEND (it may change at run time). os.environ.get took ~1 us when it is
# unset (a KeyError raised and caught inside), a quarter of a batch-1 op's Python cost; CPython's os.environ
# keeps its encoded entries in the dict _data, which every os.environ update also updates.
_ENV = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey("FASTZOO_BACKEND") if _ENV is not None else None


def _env_backend():
    if _ENV is None:
        return os.environ.get("FASTZOO_BACKEND")
    raw = _ENV.get(_ENV_KEY)
    return None if raw is None else os.environ.decodevalue(raw)


def get_backend() -> str:
    if _current is not None:
        return _current
    return _check_name(_env_backend() or "auto", "FASTZOO_BACKEND")


def set_backend(name: str) -> None:
    """Set the backend for every fused op from now on ("auto" restores the default choice)."""
    global _current
    _current = _check_name(name)


@contextlib.contextmanager
def backend(name: str):
    """with fastzoo.backend("reference"): ... runs the block on that backend."""
    global _current
    _check_name(name)
    previous, _current = _current, name
    try:
        yield name
    finally:
        _current = previous


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_importable():
    try:
        import triton  # noqa: F401
        return None
    except ImportError:
        return "triton is not installed (pip install triton)"


def unavailable_reason(name: str, device_type: str):
    """None if backend `name` can run tensors of `device_type` now, else why not."""
    import torch

    if name == "reference":
        return None
    if name == "cpu":
        if not _ext.loaded():
            return f"fastzoo._C is not built ({_ext.load_error}); reinstall with pip install --no-build-isolation ."
        if device_type != "cpu":
            return f"the cpu backend runs CPU tensors; the input is on {device_type}"
        return None
    if name == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs CUDA tensors; the input is on {device_type}"
        if not _ext.has_cuda_kernels():
            return "fastzoo._C was built without CUDA kernels (rebuild with FASTZOO_CUDA=1 where nvcc is found)"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        return None
    if name == "triton":
        why = _triton_importable()
        if why:
            return why
        if device_type == "cuda":
            return None if torch.cuda.is_available() else "no CUDA device is visible"
        if device_type == "cpu" and triton_interpret():
            return None
        return f"the triton backend runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1); the input is on {device_type}"
    raise ValueError(f"fastzoo: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


# (backend, device type) -> what resolve gave: what is built and which devices are visible do not change
# in a process (triton on CPU tensors depends on TRITON_INTERPRET: not cached)
_resolved = {}


def resolve(device_type: str) -> str:
    """The concrete backend for tensors on `device_type`; a clear error if the chosen one cannot run."""
    # get_backend() inlined: every fused op call comes here (a name that is not a backend is never cached)
    name = _current
    if name is None:
        name = _env_backend() or "auto"
    hit = _resolved.get((name, device_type))
    if hit is not None:
        return hit
    name = get_backend()
    chosen = _resolve(name, device_type)
    if name != "triton":
        _resolved[(name, device_type)] = chosen
    return chosen


def cpu_kernels_in_use() -> bool:
    """True when CPU tensors run fastzoo._C's C++ kernels: built, and the backend resolves to them (False,
    not an error, when the cpu backend is chosen but not built: the callers fall back to plain PyTorch)."""
    return _ext.loaded() and resolve("cpu") == "cpu"


def _resolve(name, device_type):
    if name == "auto":
        order = ("cpu",) if device_type == "cpu" else ("cuda", "triton") if device_type == "cuda" else ()
        for candidate in order:
            if unavailable_reason(candidate, device_type) is None:
                return candidate
        return "reference"
    why = unavailable_reason(name, device_type)
    if why:
        raise RuntimeError(f"fastzoo: backend {name!r} is unavailable: {why}")
    return name


def available_backends(device_type: str):
    return [b for b in BACKENDS[1:] if unavailable_reason(b, device_type) is None]
