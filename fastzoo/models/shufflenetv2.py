"""ShuffleNetV2 x0.5 / x1.0 / x1.5 / x2.0 (Ma et al. 2018) with torchvision's layout (conv1, stage2..4 of
InvertedResidual with branch1 / branch2, conv5, fc), so torchvision state_dicts load unchanged. Eval mode:
conv1 / conv5 are ConvBnAct; each branch's dw conv + BN runs dwconv_bn_act and each 1x1 conv + BN + ReLU
pwconv_bn_act (FusedSequential keeps torchvision's flat branch keys); the shuffle runs channel_shuffle."""
import torch
from torch import nn

from ..layers import ChannelShuffle, ConvBnAct, Linear
from ._common import finish, to_channels_last_for_inference
from ._conv_bn import FusedSequential
from ._registry import register_model

REPEATS = (4, 8, 4)  # blocks in stage2..4 (the paper's table 5)
# output channels of conv1, stage2..4, conv5 per width (table 5)
WIDTHS = {"x0_5": (24, 48, 96, 192, 1024), "x1_0": (24, 116, 232, 464, 1024), "x1_5": (24, 176, 352, 704, 1024),
          "x2_0": (24, 244, 488, 976, 2048)}


def _dw_pw(inp, out, stride):
    return [nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
            nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleNetV2 block: stride must be 1 or 2, got {stride}")
        self.stride = stride
        half = oup // 2
        if stride == 1 and inp != 2 * half:
            raise ValueError("ShuffleNetV2 block: a stride-1 block needs inp == oup (even)")
        self.branch1 = FusedSequential(*_dw_pw(inp, half, stride)) if stride > 1 else FusedSequential()
        self.branch2 = FusedSequential(nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
                                       nn.BatchNorm2d(half), nn.ReLU(inplace=True), *_dw_pw(half, half, stride))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    def __init__(self, channels, repeats=REPEATS, num_classes=1000, in_chans=3, dropout=0.0):
        super().__init__()
        self.conv1 = ConvBnAct(in_chans, channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = channels[0]
        for i, (n, out) in enumerate(zip(repeats, channels[1:-1])):
            blocks = [InvertedResidual(c if j == 0 else out, out, 2 if j == 0 else 1) for j in range(n)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*blocks))
            c = out
        self.conv5 = ConvBnAct(c, channels[-1], 1)
        self.num_features = channels[-1]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = Linear(channels[-1], num_classes)

    def forward_features(self, x):
        x = self.maxpool(self.conv1(to_channels_last_for_inference(self, x)))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))

    def forward(self, x):
        return self.fc(self.dropout(self.forward_features(x).mean([2, 3])))


def _register(width):
    name = f"shufflenetv2_{width}"

    def build(weights=None, **kwargs):
        return finish(ShuffleNetV2(WIDTHS[width], **kwargs), weights)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ShuffleNetV2 {width.replace('_', '.')}; options num_classes, in_chans, "
                     "dropout (0, as torchvision).")
    globals()[name] = register_model(f"shufflenet_v2_{width}", f"tv_shufflenet_v2_{width}")(build)


for _w in WIDTHS:
    _register(_w)
