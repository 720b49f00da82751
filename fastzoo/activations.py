"""The activations every fused op takes by name (order matches csrc/include/fastzoo/activation.h)."""
import torch
import torch.nn.functional as F

ACTIVATIONS = ("identity", "relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu")

_FUNCS = {
    "identity": lambda v: v,
    "relu": F.relu,
    "relu6": F.relu6,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
}

# nn.Module activation classes (torchvision/timm use these) -> name
_MODULES = {
    torch.nn.Identity: "identity", torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6",
    torch.nn.Hardswish: "hardswish", torch.nn.Hardsigmoid: "hardsigmoid", torch.nn.SiLU: "silu",
    torch.nn.Sigmoid: "sigmoid", torch.nn.GELU: "gelu",
}


def check_act(op: str, arg: str, name: str) -> str:
    if name not in _FUNCS:
        raise ValueError(f"{op}: unknown activation {arg}={name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


def apply(name: str, v: torch.Tensor) -> torch.Tensor:
    return _FUNCS[name](v)


def grad(name: str, z: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """d act(z)/dz * gy, in plain torch ops (used by every op's backward)."""
    if name == "identity":
        return gy
    if name == "relu":
        return gy * (z > 0)
    if name == "relu6":
        return gy * ((z > 0) & (z < 6))
    if name == "hardswish":
        return torch.ops.aten.hardswish_backward(gy, z)
    if name == "hardsigmoid":
        return torch.ops.aten.hardsigmoid_backward(gy, z)
    if name == "silu":
        return torch.ops.aten.silu_backward(gy, z)
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return gy * s * (1 - s)
    if name == "gelu":
        return torch.ops.aten.gelu_backward(gy, z)
    raise ValueError(f"unknown activation {name!r}")


def name_of(module) -> str:
    """The activation name of an nn.Module (None -> identity); clear error for others."""
    if module is None:
        return "identity"
    for cls, name in _MODULES.items():
        if type(module) is cls:
            if cls is torch.nn.GELU and getattr(module, "approximate", "none") != "none":
                break
            return name
    raise ValueError(f"fastzoo: activation module {type(module).__name__} has no fused kernel; "
                     f"expected one of {', '.join(c.__name__ for c in _MODULES)}")
