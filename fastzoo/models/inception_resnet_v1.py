"""Inception-ResNet-v1 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet and the Impact of Residual Connections
on Learning"): the stem of figure 14 (35x35x256), Inception-ResNet-A blocks (figure 10, 35x35x256), reduction A
(figure 7 with k=192, l=192, m=256, n=384: 17x17x896), Inception-ResNet-B blocks (figure 11, 17x17x896), reduction B
(figure 12: 8x8x1792), Inception-ResNet-C blocks (figure 13, 8x8x1792), average pool, dropout, fc. Each residual
block's branches are concatenated, projected back by a linear 1x1 conv (with bias) and scaled before the add and
ReLU (section 3.3: 0.17 / 0.10 / 0.20 for A / B / C, the values of the TF-slim code).

Layout and block counts are those of FaceNet's Inception-ResNet-v1 (davidsandberg/facenet, ported as
timesler/facenet-pytorch InceptionResnetV1: conv2d_1a .. conv2d_4b, repeat_1 / mixed_6a / repeat_2 / mixed_7a /
repeat_3, block8, each conv block .conv + .bn with BN eps 1e-3), the only published weights of this network: 5 A,
10 B and 5 C blocks as figure 15, then a sixth C block with scale 1 and no ReLU (as TF-slim ends Inception-ResNet-v2,
fastzoo.models.inception_resnet_v2). The head is the paper's (logits = fc on the pooled 1792 features) unless
embedding_dim is given: then FaceNet's (last_linear to embedding_dim without bias, last_bn BatchNorm1d eps 1e-3,
logits), so FaceNet's classify checkpoints load with embedding_dim=512, num_classes=8631 (VGGFace2) or 10575
(CASIA-WebFace). Smallest input 75x75.

Oracle: the paper gives no parameter count or FLOPs for this network; its figures are the layer table the tests
walk by hand (every block's branch widths, kernels and strides; 35 / 17 / 8 grids of 256 / 896 / 1792 channels at
299x299). Counts: 22,564,096 parameters without a head (FaceNet's trunk; 23,482,624, the ~23.5M usually
quoted, with its 512-d embedding layer), 24,357,096 with the 1000-class fc, 23,995,624 with FaceNet's embedding
and 1000 logits.

The blocks are fastzoo.models.inception_resnet_v2's (ConvNormAct, the _Residual forward) at v1's widths. Eval mode:
1x1 stride-1 conv + BN + ReLU as pwconv_bn_act, the other convs one conv with folded BN + ReLU, each residual
block's up-projection, scale, add and ReLU as one pwconv_bn_act."""
import torch
from torch import nn

from ..layers import Linear
from ._common import init_weights, to_channels_last_for_inference
from ._registry import register_model
from ._weights import load_weights
from .inception_resnet_v2 import ConvNormAct as C
from .inception_resnet_v2 import _Residual
from .inception_v2 import add_bn_counters

SCALES = (0.17, 0.10, 0.20)
REPEATS = (5, 10, 5)  # A, B, C blocks before the final C block (figure 15; FaceNet's layout)


class Block35(_Residual):
    """Inception-ResNet-A (figure 10): 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 32, 3x3 32; 1x1 256."""

    def __init__(self, scale=1.0):
        super().__init__(scale)
        self.branch0 = C(256, 32, 1)
        self.branch1 = nn.Sequential(C(256, 32, 1), C(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(C(256, 32, 1), C(32, 32, 3, padding=1), C(32, 32, 3, padding=1))
        self.conv2d = nn.Conv2d(96, 256, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(_Residual):
    """Inception-ResNet-B (figure 11): 1x1 128 | 1x1 128, 1x7 128, 7x1 128; 1x1 896."""

    def __init__(self, scale=1.0):
        super().__init__(scale)
        self.branch0 = C(896, 128, 1)
        self.branch1 = nn.Sequential(C(896, 128, 1), C(128, 128, (1, 7), padding=(0, 3)),
                                     C(128, 128, (7, 1), padding=(3, 0)))
        self.conv2d = nn.Conv2d(256, 896, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Block8(_Residual):
    """Inception-ResNet-C (figure 13): 1x1 192 | 1x1 192, 1x3 192, 3x1 192; 1x1 1792."""

    def __init__(self, scale=1.0, no_relu=False):
        super().__init__(scale, relu=not no_relu)
        self.branch0 = C(1792, 192, 1)
        self.branch1 = nn.Sequential(C(1792, 192, 1), C(192, 192, (1, 3), padding=(0, 1)),
                                     C(192, 192, (3, 1), padding=(1, 0)))
        self.conv2d = nn.Conv2d(384, 1792, 1)

    def _branches(self, x):
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed_6a(nn.Module):
    """Reduction A (figure 7), k=192 l=192 m=256 n=384: 3x3/2 384 | 1x1 192, 3x3 192, 3x3/2 256 | max-pool 3x3/2."""

    def __init__(self):
        super().__init__()
        self.branch0 = C(256, 384, 3, 2)
        self.branch1 = nn.Sequential(C(256, 192, 1), C(192, 192, 3, padding=1), C(192, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed_7a(nn.Module):
    """Reduction B (figure 12): 1x1 256, 3x3/2 384 | 1x1 256, 3x3/2 256 | 1x1 256, 3x3 256, 3x3/2 256 | max-pool."""

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(C(896, 256, 1), C(256, 384, 3, 2))
        self.branch1 = nn.Sequential(C(896, 256, 1), C(256, 256, 3, 2))
        self.branch2 = nn.Sequential(C(896, 256, 1), C(256, 256, 3, padding=1), C(256, 256, 3, 2))
        self.branch3 = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class InceptionResnetV1(nn.Module):
    def __init__(self, num_classes=1000, in_chans=3, dropout=0.2, embedding_dim=None, repeats=REPEATS):
        super().__init__()
        self.num_features = 1792
        # stem, figure 14 ("V": valid padding)
        self.conv2d_1a = C(in_chans, 32, 3, 2)
        self.conv2d_2a = C(32, 32, 3)
        self.conv2d_2b = C(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = C(64, 80, 1)
        self.conv2d_4a = C(80, 192, 3)
        self.conv2d_4b = C(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[Block35(SCALES[0]) for _ in range(repeats[0])])
        self.mixed_6a = Mixed_6a()
        self.repeat_2 = nn.Sequential(*[Block17(SCALES[1]) for _ in range(repeats[1])])
        self.mixed_7a = Mixed_7a()
        self.repeat_3 = nn.Sequential(*[Block8(SCALES[2]) for _ in range(repeats[2])])
        self.block8 = Block8(no_relu=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # the paper keeps 0.8 of the activations
        self.embedding_dim = embedding_dim
        if embedding_dim:
            self.last_linear = Linear(self.num_features, embedding_dim, bias=False)
            self.last_bn = nn.BatchNorm1d(embedding_dim, eps=1e-3)
        self.logits = Linear(embedding_dim or self.num_features, num_classes)

    def forward_features(self, x):
        x = to_channels_last_for_inference(self, x)
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                     "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"):
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        x = self.dropout(self.avgpool_1a(self.forward_features(x)).flatten(1))
        if self.embedding_dim:
            x = self.last_bn(self.last_linear(x))
        return self.logits(x)


@register_model("inceptionresnetv1")
def inception_resnet_v1(weights=None, **kwargs):
    """Inception-ResNet-v1, FaceNet's layout; options num_classes, in_chans, dropout (0.2), embedding_dim (None:
    the paper's fc head; 512: FaceNet's embedding + logits head), weights."""
    model = InceptionResnetV1(**kwargs)
    init_weights(model)
    if weights is not None:
        load_weights(model, weights, (add_bn_counters,))
    return model
