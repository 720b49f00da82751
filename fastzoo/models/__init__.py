"""The model zoo: one constructor per variant, each built from fastzoo layers. Every family module
(fastzoo/models/<family>.py) registers its constructors with @register_model on import."""
import importlib
import pkgutil

from ._registry import _MODELS, canonical_name, create_model, list_models, register_model
from ._weights import load_weights, read_state_dict
from ._convert import convert

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

globals().update(_MODELS)  # fastzoo.models.mobilenetv3_small, ...

__all__ = ["create_model", "list_models", "register_model", "canonical_name", "load_weights", "convert",
           "read_state_dict"] + sorted(_MODELS)
