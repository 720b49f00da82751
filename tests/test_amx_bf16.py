"""The bf16 GEMMs' vdpbf16ps tiles where this CPU runs AMX ones: FASTZOO_NO_AMX=1 keeps the tiles that CPUs
with AVX512-BF16 but no AMX run, so the bf16 GEMM tests run again in a process with it set (exit code 5,
nothing collected, fails too). AMX itself is tested wherever the CPU has it: those tests take it there."""
import os
import subprocess
import sys

import pytest

import fastzoo

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = ["test_pwconv_bn_act.py::test_bf16_gemm_one_rounding", "test_pwconv_bn_act.py::test_bf16_silu_epilogue",
         "test_mbconv.py::test_mbconv_bf16_strips"]


def kernels():
    return fastzoo._ext._C.cpu_kernels() if fastzoo._ext.loaded() else {}


@pytest.mark.skipif(not kernels().get("amx_bf16"), reason="the CPU kernels do not take AMX on this CPU")
def test_the_vdpbf16ps_tiles_with_amx_turned_off():
    env = {**os.environ, "FASTZOO_NO_AMX": "1"}
    probe = subprocess.run([sys.executable, "-c", "import fastzoo; print(fastzoo._ext._C.cpu_kernels())"], env=env,
                           capture_output=True, text=True, cwd=HERE)
    assert "'amx_bf16': False" in probe.stdout and "'avx512bf16': True" in probe.stdout, probe.stdout + probe.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, "-k",
                        "cpu and not shared"], env=env, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


def test_cpu_kernels_report_amx():
    """cpu_kernels() names the AMX path, and only with AVX512-BF16 (AMX's GEMMs are that path's blocks)."""
    k = kernels()
    if not k:
        pytest.skip("fastzoo._C is not built")
    assert isinstance(k["amx_bf16"], bool)
    assert not k["amx_bf16"] or k["avx512bf16"]
