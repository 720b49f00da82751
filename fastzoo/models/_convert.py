"""fastzoo.convert(model): a torchvision or timm model instance -> the fastzoo model with its weights.

Which fastzoo model: for timm, the model's pretrained_cfg["architecture"] (a timm name, resolved through the
registry's aliases), then the other timm names of the same timm module; for torchvision, the torchvision names
whose builder lives in the module of the model's class (torchvision.models.resnet: resnet18 ... wide_resnet101_2)
that the registry knows. Each candidate is built on the meta device with the model's num_classes and in_chans
and given the model's state_dict (as meta tensors, so nothing is copied): the first one whose keys and shapes
fit (through the family's torchvision / timm remaps) is built for real and loaded. torchvision and timm are never
imported here: models are recognised by the module of their class."""
import sys
import warnings

import torch
from torch import nn

from ._registry import _ALIASES, _MODELS, canonical_name, create_model

# options a source model carries as attributes, passed on to the fastzoo constructor when present
_BOOL_OPTIONS = ("aux_logits", "transform_input")


def _library(model):
    module = type(model).__module__
    for lib in ("torchvision", "timm", "fastzoo"):
        if module == lib or module.startswith(lib + "."):
            return lib
    return None


def _registered(name):
    try:
        return canonical_name(name)
    except ValueError:
        return None


def _unique(names):
    out = []
    for n in names:
        if n is not None and n not in out:
            out.append(n)
    return out


def _timm_candidates(model):
    """(timm names, fastzoo names): the model's architecture; for a model built from its class (no
    pretrained_cfg), every timm name of the class's timm module."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    arch = cfg.get("architecture")
    if arch:
        return [arch], _unique([_registered(arch)])
    timm = sys.modules.get("timm")
    module = type(model).__module__
    names = timm.list_models(module=module.rsplit(".", 1)[-1]) if timm is not None else []
    return names, _unique(_registered(n) for n in names)


def _torchvision_candidates(model):
    """(torchvision names, fastzoo names) of the builders in the module of the model's class, the ones
    whose parameter count (torchvision's weights metadata) is closest to the model's first."""
    tv_models = sys.modules.get("torchvision.models")
    module = type(model).__module__
    names = [n for n in tv_models.list_models()
             if tv_models.get_model_builder(n).__module__ == module] if tv_models is not None else []
    have = sum(p.numel() for p in model.parameters())

    def distance(n):
        try:
            return abs(tv_models.get_model_weights(n).DEFAULT.meta["num_params"] - have)
        except (AttributeError, KeyError, ValueError):
            return float("inf")
    names.sort(key=distance)
    return names, _unique(_registered(n) for n in names)


def _close(names):
    import difflib
    pool = list(_MODELS) + list(_ALIASES)
    return _unique(_ALIASES.get(c, c) for n in names[:8] for c in difflib.get_close_matches(n, pool, n=3, cutoff=0.6))


def _num_classes(model, lib):
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and lib == "timm":
        return n
    params = [p for _, p in model.named_parameters()]
    if not params:
        return None
    return params[-1].shape[0]  # the classifier's bias (every torchvision classification model ends on it)


def _in_chans(model):
    for _, p in model.named_parameters():
        if p.dim() == 4:
            return p.shape[1]
    return None


def _options(model, lib):
    kwargs = {}
    n = _num_classes(model, lib)
    if n is not None:
        kwargs["num_classes"] = n
    c = _in_chans(model)
    if c is not None and c != 3:
        kwargs["in_chans"] = c
    for opt in _BOOL_OPTIONS:
        v = getattr(model, opt, None)
        if isinstance(v, bool):
            kwargs[opt] = v
    return kwargs


def _fits(name, meta_sd, kwargs):
    """None if fastzoo's `name` built with kwargs takes the state_dict, else why not (one line)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_model(name, weights=meta_sd, **kwargs)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        return f"{type(e).__name__}: {msg[:400]}"
    return None


def _first_param(model):
    return next(iter(model.parameters()), None)


def convert(model: nn.Module, name: str = None, **kwargs) -> nn.Module:
    """The fastzoo model equivalent to a torchvision or timm model instance, with its weights:
    fastzoo.convert(torchvision.models.resnet50(weights=...)) -> fastzoo resnet50 with the same weights.

    Carries over num_classes and in_chans (read from the weights), aux_logits / transform_input (Inception,
    GoogLeNet), train/eval mode, device, dtype and channels_last memory format. `name` forces the fastzoo model
    (any registered or alias name, e.g. for a model from another library in a supported layout); `kwargs` go to
    its constructor (dropout, drop_path_rate, ...). Raises ValueError when no fastzoo model takes the weights,
    naming the candidates tried and why each does not fit."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastzoo.convert: expected a torch.nn.Module, got {type(model).__name__}")
    lib = _library(model)
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if lib == "fastzoo" and name is None:
        return model
    if name is not None:
        tried, candidates = [name], [canonical_name(name)]
    elif lib == "timm":
        tried, candidates = _timm_candidates(model)
    elif lib == "torchvision":
        tried, candidates = _torchvision_candidates(model)
    else:
        raise ValueError(f"fastzoo.convert: {cls} is neither a torchvision nor a timm model; pass name= "
                         f"(one of fastzoo.list_models()) if its state_dict is in a torchvision / timm layout")
    if not candidates:
        hint = f" ({lib} name {', '.join(tried[:8])})" if tried else ""
        close = _close(tried)
        close = f"; closest fastzoo names: {', '.join(close)}" if close else "; see fastzoo.list_models()"
        raise ValueError(f"fastzoo.convert: no fastzoo model for {lib} {cls}{hint}{close}")
    opts = dict(_options(model, lib), **kwargs)
    sd = model.state_dict()
    meta_sd = {k: torch.empty_like(v, device="meta") for k, v in sd.items()}
    reasons = {}
    for cand in candidates:
        why = _fits(cand, meta_sd, opts)
        if why is None:
            break
        reasons[cand] = why
    else:
        detail = "; ".join(f"{c}: {r}" for c, r in reasons.items())
        raise ValueError(f"fastzoo.convert: no fastzoo model takes the weights of {cls} (options {opts}); "
                         f"tried {', '.join(candidates)} -> {detail}")
    p = _first_param(model)
    device = p.device if p is not None else torch.device("cpu")
    with torch.device("meta" if device.type == "meta" else "cpu"):
        fz = create_model(cand, weights=sd if device.type != "meta" else meta_sd, **opts)
    if p is not None and device.type != "meta":
        fz = fz.to(device=device, dtype=p.dtype if p.is_floating_point() else None)
    w = next((q for q in model.parameters() if q.dim() == 4), None)
    if w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        fz = fz.to(memory_format=torch.channels_last)
    fz.train(model.training)
    fz.fastzoo_name = cand
    return fz

