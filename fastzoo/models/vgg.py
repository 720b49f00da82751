"""VGG 11/13/16/19 with and without BN (Simonyan & Zisserman 2015) and AlexNet (Krizhevsky et al. 2012, the
one-GPU variant torchvision ships): plain conv stacks as data, torchvision's layout (features.<i>,
avgpool, classifier.<i>), so torchvision state_dicts load unchanged. In eval mode each conv (+ BN) + ReLU
run of `features` runs as one conv with BN folded (FusedSequential); pooling is plain, the classifier's
linears are fastzoo.layers.Linear."""
from torch import nn

from ..layers import Linear
from ._common import FeaturesClassifier, finish
from ._conv_bn import FusedSequential
from ._registry import register_model

# VGG configurations A, B, D, E (the paper's table 1): output channels of 3x3 convs, "M" for 2x2 max-pool
VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# AlexNet: (out, kernel, stride, padding) convs, "M" for 3x3 stride-2 max-pool
ALEXNET = [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M"]


def conv_stack(rows, in_chans, batch_norm=False, pool=(2, 2)):
    """features as a flat FusedSequential: rows of (out, kernel, stride, padding) or an int (3x3, pad 1)."""
    layers, c = [], in_chans
    for row in rows:
        if row == "M":
            layers.append(nn.MaxPool2d(*pool))
            continue
        out, k, s, p = (row, 3, 1, 1) if isinstance(row, int) else row
        layers.append(nn.Conv2d(c, out, k, s, p))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        c = out
    return FusedSequential(*layers), c


class PlainConvNet(FeaturesClassifier):
    """features -> adaptive avg-pool -> two hidden fully connected layers with dropout -> logits."""

    def __init__(self, rows, num_classes=1000, in_chans=3, batch_norm=False, dropout=0.5, pool=(2, 2),
                 pool_size=7, hidden=4096, dropout_first=False):
        super().__init__()
        self.features, c = conv_stack(rows, in_chans, batch_norm, pool)
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        n = c * pool_size * pool_size
        if dropout_first:  # AlexNet: dropout before each hidden linear
            head = [nn.Dropout(dropout), Linear(n, hidden), nn.ReLU(True), nn.Dropout(dropout),
                    Linear(hidden, hidden), nn.ReLU(True), Linear(hidden, num_classes)]
        else:  # VGG: dropout after each hidden ReLU
            head = [Linear(n, hidden), nn.ReLU(True), nn.Dropout(dropout), Linear(hidden, hidden),
                    nn.ReLU(True), nn.Dropout(dropout), Linear(hidden, num_classes)]
        self.classifier = nn.Sequential(*head)


def _vgg(depth, batch_norm, weights=None, **kwargs):
    return finish(PlainConvNet(VGG_CFGS[depth], batch_norm=batch_norm, **kwargs), weights)


def _register_vgg(depth, batch_norm):
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")

    def build(weights=None, **kwargs):
        return _vgg(depth, batch_norm, weights, **kwargs)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"VGG-{depth}{' with BatchNorm' if batch_norm else ''}; options num_classes, in_chans, dropout."
    globals()[name] = register_model(f"tv_{name}")(build)


for _depth in VGG_CFGS:
    for _bn in (False, True):
        _register_vgg(_depth, _bn)


@register_model("tv_alexnet")
def alexnet(weights=None, **kwargs):
    """AlexNet (torchvision's single-tower variant); options num_classes, in_chans, dropout."""
    return finish(PlainConvNet(ALEXNET, pool=(3, 2), pool_size=6, dropout_first=True, **kwargs), weights)
