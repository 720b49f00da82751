"""fastzoo: classic and mobile CNNs on fused operators (C++ CPU, CUDA and Triton kernels, each checked
against a plain PyTorch reference)."""
try:
    import torch  # noqa: F401
except ImportError:  # one clear line instead of a traceback deep inside fastzoo
    raise ImportError("fastzoo needs PyTorch: install torch first (pip install torch)") from None

__version__ = "0.1.0"

from . import _ext, layers, models, ops, reference  # noqa: E402
from .backends import available_backends, backend, get_backend, set_backend  # noqa: E402
from .models import *  # noqa: E402,F401,F403  fastzoo.mobilenetv3_small(), fastzoo.create_model(), ...

__all__ = ["ops", "layers", "models", "reference", "backend", "set_backend", "get_backend", "available_backends",
           "__version__"] + models.__all__
