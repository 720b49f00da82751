"""The huge-page buffers (csrc/cpu/huge_pages.h) that a BlockChain's packed weights and output buffers and the
tiled mbconv's scratch live in: usable memory of the asked size, 2 MiB-aligned from 1 MiB, and backed by huge
pages where the kernel's transparent huge pages take madvise. The chains' results through them are checked
bit for bit by test_block_sequence.py (weights packed again in place when they change included)."""
import re
from pathlib import Path

import pytest
import torch

from fastzoo import _ext

HUGE = 2 << 20
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _anon_huge_kib(address):
    """AnonHugePages of the mapping of this process that holds address (kB), from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            inside = int(m.group(1), 16) <= address < int(m.group(2), 16)
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("numel,dtype", [(3 * HUGE // 4 + 5, torch.float32), (HUGE // 4, torch.bfloat16),
                                         (HUGE // 8 - 1, torch.float32), (1000, torch.float32), (1, torch.float32)])
def test_huge_page_empty_holds_what_is_written(numel, dtype):
    t = _ext._C.huge_page_empty(numel, dtype)
    assert t.shape == (numel,) and t.dtype == dtype and t.is_contiguous()
    if numel * t.element_size() >= HUGE // 2:
        assert t.data_ptr() % HUGE == 0
    src = torch.randn(numel).to(dtype)
    t.copy_(src)
    assert torch.equal(t, src)
    del t  # unmapped by its deleter


@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text(), reason="no transparent huge pages here")
def test_huge_page_empty_is_backed_by_huge_pages():
    t = _ext._C.huge_page_empty(3 * HUGE // 8, torch.float32)  # one and a half: two huge pages
    t.normal_()  # touched: the kernel backs the madvised range at the first fault
    assert _anon_huge_kib(t.data_ptr()) >= 2048
