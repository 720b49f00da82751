"""The model registry: list_models, create_model, with torchvision and timm names as aliases."""
import difflib
import fnmatch

_MODELS = {}
_ALIASES = {}


def register_model(*aliases):
    """@register_model("torchvision_name", "timm_name"): the function's name is the canonical name."""
    def wrap(fn):
        _MODELS[fn.__name__] = fn
        for a in aliases:
            _ALIASES[a] = fn.__name__
        return fn
    return wrap


def list_models(pattern=None):
    """Sorted canonical model names, filtered by a shell-style pattern ("efficientnet_b*")."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def canonical_name(name: str) -> str:
    if name in _MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, list(_MODELS) + list(_ALIASES), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see fastzoo.list_models()"
    raise ValueError(f"fastzoo: unknown model name {name!r}{hint}")


def create_model(name: str, **kwargs):
    """Build a model by canonical, torchvision or timm name: create_model("mobilenet_v3_small", weights=...)."""
    return _MODELS[canonical_name(name)](**kwargs)


def aliases_of(name: str):
    """The torchvision / timm names registered for a canonical name."""
    return [a for a, n in _ALIASES.items() if n == name]
