"""SqueezeNet 1.0 (Iandola et al. 2016) and 1.1 (the SqueezeNet repo's 2.4x cheaper variant), torchvision's
layout (features.<i> with Fire modules: squeeze, expand1x1, expand3x3; classifier.1 the 1x1 conv head), so
torchvision state_dicts load unchanged. Eval mode: every 1x1 conv + ReLU (squeeze, expand1x1, the head)
runs pwconv_bn_act (unit scale, bias as shift); the 3x3 / 7x7 convs one conv + ReLU."""
import torch
from torch import nn

from ._common import finish, to_channels_last_for_inference
from ._conv_bn import FusedSequential, conv_bn_act
from ._registry import register_model
from ._weights import load_weights

# stem conv (out, kernel, stride), then "M" (3x3 stride-2 ceil max-pool) or Fire (squeeze, expand1x1, expand3x3)
SQUEEZENET = {
    "1_0": [(96, 7, 2), "M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128), (48, 192, 192),
            (48, 192, 192), (64, 256, 256), "M", (64, 256, 256)],
    "1_1": [(64, 3, 2), "M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
            (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)],
}


class Fire(nn.Module):
    def __init__(self, inplanes, squeeze, expand1x1, expand3x3):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = conv_bn_act(self, self.squeeze, None, x, "relu")
        return torch.cat([conv_bn_act(self, self.expand1x1, None, x, "relu"),
                          conv_bn_act(self, self.expand3x3, None, x, "relu")], 1)


class SqueezeNet(nn.Module):
    def __init__(self, rows, num_classes=1000, in_chans=3, dropout=0.5):
        super().__init__()
        layers, c = [], in_chans
        for row in rows:
            if row == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            elif len(layers) == 0:
                out, k, s = row
                layers += [nn.Conv2d(c, out, k, s), nn.ReLU(inplace=True)]
                c = out
            else:
                layers.append(Fire(c, *row))
                c = row[1] + row[2]
        self.features = FusedSequential(*layers)
        self.num_features = c
        self.classifier = FusedSequential(nn.Dropout(dropout), nn.Conv2d(c, num_classes, 1), nn.ReLU(inplace=True),
                                          nn.AdaptiveAvgPool2d(1))

    def forward_features(self, x):
        return self.features(to_channels_last_for_inference(self, x))

    def forward(self, x):
        return torch.flatten(self.classifier(self.forward_features(x)), 1)


def _squeezenet(version, weights=None, **kwargs):
    model = finish(SqueezeNet(SQUEEZENET[version], **kwargs))
    nn.init.normal_(model.classifier[1].weight, 0.0, 0.01)  # torchvision's head init
    return model if weights is None else load_weights(model, weights)


@register_model("tv_squeezenet1_0")
def squeezenet1_0(weights=None, **kwargs):
    """SqueezeNet 1.0; options num_classes, in_chans, dropout."""
    return _squeezenet("1_0", weights, **kwargs)


@register_model("tv_squeezenet1_1")
def squeezenet1_1(weights=None, **kwargs):
    """SqueezeNet 1.1; options num_classes, in_chans, dropout."""
    return _squeezenet("1_1", weights, **kwargs)
