"""fastzoo: classic and mobile CNNs on fused operators (C++ CPU, CUDA and Triton kernels, each checked
against a plain PyTorch reference)."""
try:
    import torch  # noqa: F401
except ImportError:  # one clear line instead of a traceback deep inside fastzoo
    raise ImportError("fastzoo needs PyTorch: install torch first (pip install torch)") from None

from . import _ext, layers, ops, reference
from .backends import available_backends, backend, get_backend, set_backend

__version__ = "0.1.0"

__all__ = ["ops", "layers", "reference", "backend", "set_backend", "get_backend", "available_backends", "__version__"]
