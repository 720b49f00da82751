"""Loading weights: a path or a state_dict, in fastzoo, torchvision or timm layout, with clear errors."""
import os
from collections import OrderedDict

import torch


def read_state_dict(weights):
    """A state_dict from a path (torch.load, weights_only=True) or a mapping; unwraps {"model": ...} and
    {"state_dict": ...} training checkpoints."""
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"fastzoo: weights file {path!r} does not exist")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, pickle garbage, ...
            raise ValueError(f"fastzoo: cannot read weights file {path!r}: it is corrupt or not a PyTorch "
                             f"checkpoint ({type(e).__name__}: {e})") from None
    else:
        sd = weights
    if not isinstance(sd, dict):
        raise TypeError(f"fastzoo: weights must be a path or a state_dict, got {type(sd).__name__}")
    for key in ("model", "state_dict", "model_state_dict"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in sd.items())


def load_weights(model, weights, remaps=()):
    """Load `weights` into `model` strictly. `remaps` are functions (state_dict, model) -> state_dict or None
    that translate another library's layout (tried in order when the keys do not match as they are)."""
    sd = read_state_dict(weights)
    own = model.state_dict()
    if set(sd) != set(own):
        for remap in remaps:
            mapped = remap(sd, model)
            if mapped is not None and set(mapped) == set(own):
                sd = mapped
                break
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise KeyError(_key_report(type(model).__name__, missing, unexpected))
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"fastzoo: {len(bad)} tensors of the checkpoint do not fit {type(model).__name__} "
                         f"(a different variant or num_classes?): " + "; ".join(bad[:8]))
    model.load_state_dict(sd)
    return model


def _key_report(name, missing, unexpected, limit=10):
    def few(keys):
        more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more
    parts = [f"fastzoo: the checkpoint does not fit {name}:"]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {few(unexpected)}")
    return " ".join(parts)


def remap_by_order(sd, model, reshape=True):
    """timm -> torchvision layout for families whose tensors come in the same order and shapes
    (num_batches_tracked aside): pair them up in order, checking every shape; 1x1-conv heads become Linear."""
    own = model.state_dict()
    src = [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in own if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        return None
    out = OrderedDict()
    for (sk, sv), dk in zip(src, dst):
        if sv.shape != own[dk].shape:
            if reshape and sv.numel() == own[dk].numel() and sv.dim() == 4 and own[dk].dim() == 2:
                sv = sv.reshape(own[dk].shape)
            else:
                return None
        out[dk] = sv
    for k in own:
        if k.endswith("num_batches_tracked"):
            out[k] = own[k].clone()
    return out
