"""Helpers shared by the model families."""
import torch
from torch import nn

from .. import _ext, backends
from ..layers.block_sequence import BlockSequence
from ._weights import load_weights


def make_divisible(v, divisor=8, min_value=None):
    """Round channels to a multiple of divisor, never below 90% of v (torchvision / TF reference rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def set_bn(model, eps=None, momentum=None):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            if eps is not None:
                m.eps = eps
            if momentum is not None:
                m.momentum = momentum
    return model


def init_weights(model):
    """torchvision's initialisation for conv nets: kaiming conv, unit BN, small normal linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def finish(model, weights=None, remaps=()):
    """Initialise, then load weights if given."""
    init_weights(model)
    if weights is not None:
        load_weights(model, weights, remaps)
    return model


def to_channels_last_for_inference(model, x: torch.Tensor) -> torch.Tensor:
    """The fused CPU kernels vectorize over channels: run eval-mode models channels_last inside."""
    if model.training or x.dim() != 4:
        return x
    if (x.shape[1] == 3 and x.dtype in (torch.float32, torch.bfloat16) and x.device.type == "cpu" and x.is_contiguous()
            and type(x) is torch.Tensor and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and backends.cpu_kernels_in_use()):
        return _ext._C.rgb_to_channels_last(x)  # RGB images: ATen's strided copy took 2-5x a plain copy
    return x.contiguous(memory_format=torch.channels_last)


class FeaturesClassifier(torch.nn.Module):
    """features -> avgpool -> flatten -> classifier, the torchvision shape of most families."""

    def forward_features(self, x):
        return self.features(to_channels_last_for_inference(self, x))

    def forward(self, x):
        # the submodules from _modules itself: nn.Module.__getattr__ for them ran cold after other work, 11-15 us
        # of a batch-1 forward (efficientnet_b0, mobilenet_v3_small, in-process A/B with caches flushed between)
        mods = self._modules
        features = mods["features"]
        if isinstance(features, BlockSequence):  # features, pool and classifier in one C++ call
            head = (mods["avgpool"], mods["classifier"])
            y = features.run_if_unchanged(x, head, self)
            if y is not None:
                return y
            x = to_channels_last_for_inference(self, x)
            y = features.forward_with_head(x, head)
            if y is not None:
                return y
            x = features(x)
        else:
            x = self.forward_features(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))
