"""The model zoo: one constructor per variant, each built from fastzoo layers."""
from ._registry import canonical_name, create_model, list_models, register_model
from ._weights import load_weights, read_state_dict
from .mobilenetv3 import MobileNetV3, mobilenetv3_large, mobilenetv3_small

__all__ = ["create_model", "list_models", "register_model", "canonical_name", "load_weights", "read_state_dict",
           "MobileNetV3", "mobilenetv3_small", "mobilenetv3_large"]
