"""nn.Modules over the fused ops, holding torchvision/timm-style parameters (conv weights, BatchNorm
with running statistics) and folding BN once per eval-mode module."""
from .block_sequence import BlockSequence
from .bn_fold import FoldCache, fold_bn
from .conv_bn_act import ConvBnAct
from .linear import Linear
from .mbconv import FusedMBConv, MBConv, drop_path
from .squeeze_excite import ChannelShuffle, SqueezeExcite

__all__ = ["ConvBnAct", "SqueezeExcite", "ChannelShuffle", "MBConv", "FusedMBConv", "fold_bn", "FoldCache",
           "drop_path", "BlockSequence", "Linear"]
