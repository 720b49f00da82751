"""Squeeze-and-excite with torchvision's SqueezeExcitation layout (fc1, fc2 as 1x1 convs with bias),
running the fused squeeze_excite op in train and eval mode (the op has an autograd formula)."""
import torch
from torch import nn

from .. import activations, ops


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeeze_channels, act="relu", gate="hardsigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.act = activations.check_act("SqueezeExcite", "act", act)
        self.gate = activations.check_act("SqueezeExcite", "gate", gate)

    def forward(self, x):
        return ops.run("squeeze_excite", x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                       self.act, self.gate)

    def extra_repr(self):
        return f"act={self.act}, gate={self.gate}"


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.run("channel_shuffle", x, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"
