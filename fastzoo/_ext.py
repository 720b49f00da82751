"""Loads the compiled extension fastzoo._C (its import registers the torch.ops.fastzoo kernels)."""
import importlib

_C = None
load_error = None
try:
    _C = importlib.import_module("fastzoo._C")
except ImportError as e:  # not built: the reference (and Triton) backends still work
    load_error = str(e)


def loaded() -> bool:
    return _C is not None


def build_info() -> dict:
    if _C is None:
        return {"cuda": False, "cuda_version": None, "cuda_archs": "", "error": load_error}
    return dict(_C.build_info())


def has_cuda_kernels() -> bool:
    return _C is not None and bool(_C.build_info()["cuda"])
