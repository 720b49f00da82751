"""Builds fastzoo._C: C++ CPU kernels always, CUDA kernels when torch is a CUDA build and nvcc is found.

FASTZOO_CUDA=1 forces the CUDA kernels (fails loudly if impossible), FASTZOO_CUDA=0 skips them.
"""
import glob
import os
import re
import shutil
import sys

from setuptools import setup

try:
    import torch
except ImportError:
    sys.exit("fastzoo: install torch first (pip install torch), then pip install --no-build-isolation .")


def find_cuda_home():
    """The toolkit root whose lib64 holds libcudart; the nvcc on PATH may be a wrapper script elsewhere."""
    def has_cudart(root):
        return bool(glob.glob(os.path.join(root, "lib64", "libcudart.so*")) or
                    glob.glob(os.path.join(root, "lib", "x64", "cudart*")))

    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:  # a wrapper script: follow the path it execs
            with open(real, errors="ignore") as f:
                text = f.read(4096)
            candidates += [os.path.dirname(os.path.dirname(p)) for p in re.findall(r"(/\S+/bin/nvcc)\b", text)]
        except OSError:
            pass
    candidates += sorted(glob.glob("/usr/local/cuda*"), reverse=True)
    for root in candidates:
        if has_cudart(root) and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return root
    return None


def want_cuda():
    flag = os.environ.get("FASTZOO_CUDA", "auto").lower()
    if flag in ("0", "false", "no", "off"):
        return False, None
    cuda_home = find_cuda_home()
    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if cuda_home is None:
        reasons.append("no CUDA toolkit with nvcc and libcudart was found (set CUDA_HOME)")
    if reasons:
        if flag in ("1", "true", "yes", "on"):
            sys.exit("fastzoo: FASTZOO_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(reasons))
        print("fastzoo: building CPU kernels only: " + "; ".join(reasons))
        return False, None
    return True, cuda_home


with_cuda, cuda_home = want_cuda()
if with_cuda:
    os.environ["CUDA_HOME"] = cuda_home  # read when torch.utils.cpp_extension is imported
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sources = [os.path.relpath(p, here) for p in
           sorted(glob.glob(os.path.join(here, "csrc", "*.cpp")) + glob.glob(os.path.join(here, "csrc", "cpu", "*.cpp")))]
cxx_flags = ["-O3", "-std=c++20", f'-DFASTZOO_TORCH_VERSION="{torch.__version__}"']
if sys.platform == "linux":
    cxx_flags += ["-fopenmp"]  # ATen's parallel_for is OpenMP-backed in the official wheels
extra = {"cxx": cxx_flags}
include_dirs = [os.path.join(here, "csrc", "include")]

if with_cuda:
    sources += [os.path.relpath(p, here) for p in sorted(glob.glob(os.path.join(here, "csrc", "cuda", "*.cu")) +
                                                         glob.glob(os.path.join(here, "csrc", "cuda", "*.cpp")))]
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    defines = ["-DFASTZOO_WITH_CUDA", f'-DFASTZOO_CUDA_VERSION="{torch.version.cuda}"',
               f'-DFASTZOO_CUDA_ARCHS="{archs}"']
    extra["cxx"] += defines
    extra["nvcc"] = ["-O3", "-std=c++20", "-Xptxas", "-v", "--expt-relaxed-constexpr"] + defines
    ext = CUDAExtension("fastzoo._C", sources, include_dirs=include_dirs, extra_compile_args=extra)
else:
    ext = CppExtension("fastzoo._C", sources, include_dirs=include_dirs, extra_compile_args=extra)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
