"""at::Tensor::suggest_memory_format() for Python (torch exposes it only in C++), so the fake kernels,
the reference and the Triton launchers choose the same output layout as the C++ kernels."""
import torch


def _strides_like_channels_last(sizes, strides):
    # c10's is_channels_last_strides_2d, line by line.
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def suggest_memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.layout == torch.strided and x.dim() == 4 and _strides_like_channels_last(x.shape, x.stride()):
        return torch.channels_last
    return torch.contiguous_format
