"""fastzoo Triton kernels (installed as fastzoo.kernels).

Launchers (plain Python, the signatures of fastzoo/reference.py and docs/OPS.md): they take CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1, any strides, and return the output in x's suggested memory format.

REGISTRY lists every @triton.jit kernel with every configuration the launchers can launch it with (signature +
constexprs + num_warps/num_stages): fastzoo/compile_report.py compiles exactly these for sm_80 / sm_90.
"""
from . import channel_shuffle as _channel_shuffle_mod
from . import dwconv_bn_act as _dwconv_mod
from . import mbconv as _mbconv_mod
from . import pwconv_bn_act as _pwconv_mod
from . import squeeze_excite as _se_mod
from ._utils import KernelSpec
from .activation import ACT_CODES, ACT_NAMES, act_code

channel_shuffle = _channel_shuffle_mod.channel_shuffle
dwconv_bn_act = _dwconv_mod.dwconv_bn_act
pwconv_bn_act = _pwconv_mod.pwconv_bn_act
squeeze_excite = _se_mod.squeeze_excite
mbconv = _mbconv_mod.mbconv
fused_mbconv = _mbconv_mod.fused_mbconv

LAUNCHERS = {
    "dwconv_bn_act": dwconv_bn_act,
    "pwconv_bn_act": pwconv_bn_act,
    "squeeze_excite": squeeze_excite,
    "channel_shuffle": channel_shuffle,
    "mbconv": mbconv,
    "fused_mbconv": fused_mbconv,
}


def registry() -> "list[KernelSpec]":
    """Every (kernel, configuration) pair the launchers use; the compile report builds each one."""
    specs = []
    for mod in (_dwconv_mod, _pwconv_mod, _se_mod, _channel_shuffle_mod, _mbconv_mod):
        specs.extend(mod.configs())
    return specs


REGISTRY = registry()

__all__ = ["dwconv_bn_act", "pwconv_bn_act", "squeeze_excite", "channel_shuffle", "mbconv", "fused_mbconv",
           "LAUNCHERS", "REGISTRY", "registry", "KernelSpec", "ACT_NAMES", "ACT_CODES", "act_code"]
