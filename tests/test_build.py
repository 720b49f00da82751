"""The installed package is the one under test, with its extension built as asked."""
import os
import subprocess
import sys

import pytest

import fastzoo
from fastzoo import _ext


def test_extension_is_built():
    """Without fastzoo._C every C++ test would skip silently; set FASTZOO_ALLOW_NO_EXT=1 to test a
    pure-Python install on purpose."""
    if os.environ.get("FASTZOO_ALLOW_NO_EXT") == "1":
        pytest.skip("FASTZOO_ALLOW_NO_EXT=1")
    assert _ext.loaded(), f"fastzoo._C did not load: {_ext.load_error}"


def test_cuda_kernels_built_when_forced():
    if os.environ.get("FASTZOO_CUDA") != "1":
        pytest.skip("FASTZOO_CUDA=1 not set")
    info = _ext.build_info()
    assert info["cuda"], info
    assert "8.0" in info["cuda_archs"] and "9.0" in info["cuda_archs"], info


def test_triton_kernels_installed_inside_the_package():
    import importlib.metadata

    import fastzoo.kernels  # installed from kernels/ as fastzoo.kernels
    assert fastzoo.kernels.__name__ == "fastzoo.kernels"
    try:
        files = importlib.metadata.files("fastzoo") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastzoo is not installed (running from a source tree)")
    top_level = {str(f).split("/")[0] for f in files}
    assert "kernels" not in top_level, "the Triton kernels must not install as a top-level 'kernels' package"


def test_info_command():
    r = subprocess.run([sys.executable, "-m", "fastzoo", "info"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fastzoo._C" in r.stdout and "runnable on cpu" in r.stdout
    if "fastzoo._C: C++ CPU kernels" in r.stdout:  # built: the vector paths its CPU kernels take here
        assert "CPU kernel paths on this CPU:" in r.stdout
    assert fastzoo.__version__ in r.stdout


def test_every_subpackage_is_installed():
    """pyproject.toml lists the packages by hand (kernels/ maps to fastzoo.kernels): a new subpackage
    missing from the list would install without it."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(fastzoo.__path__, "fastzoo."):
        if info.ispkg:
            importlib.import_module(info.name)
    import tomllib
    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    on_disk = {"fastzoo." + d for d in os.listdir(os.path.join(root, "fastzoo"))
               if os.path.isfile(os.path.join(root, "fastzoo", d, "__init__.py")) and d != "kernels"}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
