"""The models' input conversion to channels_last (fastzoo._C.rgb_to_channels_last for RGB float32 and bf16
images)."""
import pytest
import torch

import fastzoo
from fastzoo import _ext
from fastzoo.models._common import to_channels_last_for_inference

needs_ext = pytest.mark.skipif(not _ext.loaded(), reason="fastzoo._C not built")


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: rows of 32 pixels and a tail
@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (2, 3, 7, 13), (1, 3, 1, 1), (3, 3, 5, 8), (1, 3, 9, 17),
                                   (2, 3, 3, 70)])
def test_rgb_to_channels_last_is_a_copy_in_channels_last(shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    y = _ext._C.rgb_to_channels_last(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.data_ptr() != x.data_ptr()
    assert torch.equal(y, x)


@needs_ext
@pytest.mark.parametrize("bad", [torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8, dtype=torch.float64),
                                 torch.randn(1, 3, 8, 16)[..., ::2], torch.randn(3, 8, 8)])
def test_rgb_to_channels_last_rejects_other_tensors(bad):
    with pytest.raises(RuntimeError, match="expected a contiguous \\(N, 3, H, W\\) float32 or bfloat16 CPU tensor"):
        _ext._C.rgb_to_channels_last(bad)


def test_models_convert_every_input_alike():
    """Eval mode: channels_last with the same values whichever path converts; train mode: x as given."""
    m = fastzoo.mobilenetv3_small(num_classes=10).eval()
    for x in (torch.randn(2, 3, 32, 33), torch.randn(2, 3, 32, 66)[..., ::2], torch.randn(1, 1, 32, 32),
              torch.randn(1, 3, 16, 16, dtype=torch.float64), torch.randn(2, 3, 16, 40, dtype=torch.bfloat16)):
        y = to_channels_last_for_inference(m, x)
        assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, x)
    x = torch.randn(1, 3, 8, 8)
    assert to_channels_last_for_inference(m.train(), x) is x
