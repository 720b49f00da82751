"""Backend choice: auto by device and build, set_backend, the context manager, FASTZOO_BACKEND."""
import subprocess
import sys

import pytest
import torch

import fastzoo
from fastzoo import _ext, backends


def test_auto_picks_by_device_and_build():
    with fastzoo.backend("auto"):
        assert backends.resolve("cpu") == ("cpu" if _ext.loaded() else "reference")


def test_set_backend_and_context_manager():
    before = fastzoo.get_backend()
    with fastzoo.backend("reference"):
        assert fastzoo.get_backend() == "reference"
        with fastzoo.backend("auto"):
            assert fastzoo.get_backend() == "auto"
        assert fastzoo.get_backend() == "reference"
    assert fastzoo.get_backend() == before
    fastzoo.set_backend("reference")
    try:
        assert backends.resolve("cpu") == "reference"
    finally:
        fastzoo.set_backend("auto")


def test_unknown_backend_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"unknown backend 'fast'; expected one of auto, reference, cpu, cuda"):
        fastzoo.set_backend("fast")
    with pytest.raises(ValueError, match=r"'fast'"):
        with fastzoo.backend("fast"):
            pass


def test_unavailable_backend_says_why():
    x = torch.randn(1, 4, 5, 5)
    if not torch.cuda.is_available():
        with fastzoo.backend("cuda"):
            with pytest.raises(RuntimeError, match=r"backend 'cuda' is unavailable: the cuda backend runs CUDA tensors"):
                fastzoo.ops.channel_shuffle(x, 2)


def _run(code, **env):
    import os
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True)


def test_environment_variable():
    r = _run("import fastzoo; print(fastzoo.get_backend())", FASTZOO_BACKEND="reference")
    assert r.stdout.strip() == "reference", r.stderr
    r = _run("import fastzoo, torch; fastzoo.ops.channel_shuffle(torch.randn(1, 4, 2, 2), 2)", FASTZOO_BACKEND="nope")
    assert r.returncode != 0 and "unknown FASTZOO_BACKEND 'nope'" in r.stderr


def test_triton_unavailable_without_interpreter_on_cpu():
    why = backends.unavailable_reason("triton", "cpu") if not backends.triton_interpret() else None
    if why:
        assert "TRITON_INTERPRET" in why or "not installed" in why


def test_environment_variable_changed_at_run_time(monkeypatch):
    monkeypatch.setattr(backends, "_current", None)  # nothing set: FASTZOO_BACKEND decides, read on every call
    monkeypatch.delenv("FASTZOO_BACKEND", raising=False)
    assert fastzoo.get_backend() == "auto"
    monkeypatch.setenv("FASTZOO_BACKEND", "reference")
    assert fastzoo.get_backend() == "reference" and backends.resolve("cpu") == "reference"
    monkeypatch.setenv("FASTZOO_BACKEND", "")
    assert fastzoo.get_backend() == "auto"
    monkeypatch.setenv("FASTZOO_BACKEND", "nope")
    with pytest.raises(ValueError, match=r"unknown FASTZOO_BACKEND 'nope'"):
        fastzoo.get_backend()
    monkeypatch.delenv("FASTZOO_BACKEND")
    assert fastzoo.get_backend() == "auto"
