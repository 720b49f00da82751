"""The CPU kernels' AVX2 paths where this CPU runs AVX-512 ones (SiLU's epilogues, the GEMM tiles, NCHW
depthwise rows, and the channel groups on the shapes those rows take here):
FASTZOO_NO_AVX512=1 keeps the AVX2 code that CPUs without AVX-512 run, so the tests that reach those kernels
run again in a process with it set (exit code 5, nothing collected, fails too)."""
import os
import subprocess
import sys

import pytest

import fastzoo

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = ["test_pwconv_bn_act.py::test_packed_gemm_shapes", "test_pwconv_bn_act.py::test_silu_epilogue_special_values",
         "test_dwconv_bn_act.py::test_activations", "test_dwconv_bn_act.py::test_nan_propagates",
         "test_dwconv_bn_act.py::test_nchw_rows512",
         "test_dwconv_bn_act.py::test_nchw_channel_groups", "test_dwconv_bn_act.py::test_nchw_row_pairs",
         "test_mbconv.py::test_mbconv_strips", "test_mbconv.py::test_mbconv_bf16_strips",
         "test_mbconv.py::test_fused_mbconv_few_input_channels"]


@pytest.mark.skipif(not fastzoo._ext.loaded(), reason="fastzoo._C is not built")
def test_the_avx2_paths_with_avx512_turned_off():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS,
                        "-k", "cpu and not shared and (silu or bf16 or not strips)"],
                       env={**os.environ, "FASTZOO_NO_AVX512": "1"}, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
