"""`fastzoo info`: versions, what fastzoo._C was built with, and which backends can run now."""
import platform

import torch

from . import __version__, _ext, backends


def collect() -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {
        "fastzoo": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "extension": _ext.build_info(),
        "cpu_kernels": dict(_ext._C.cpu_kernels()) if _ext.loaded() else None,
        "backend": backends.get_backend(),
        "runnable": {d: backends.available_backends(d) for d in devices},
        "auto": {d: backends.resolve(d) for d in devices} if backends.get_backend() == "auto" else None,
        "unavailable": {f"{b}@{d}": backends.unavailable_reason(b, d) for d in devices
                        for b in backends.BACKENDS[1:] if backends.unavailable_reason(b, d)},
    }


def main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="fastzoo info", description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ext = info["extension"]
    print(f"fastzoo {info['fastzoo']}  python {info['python']}  torch {info['torch']} (CUDA {info['torch_cuda']})"
          f"  triton {info['triton'] or 'not installed'}")
    if ext.get("error"):
        print(f"fastzoo._C: not built ({ext['error']})")
    else:
        cuda = f"CUDA {ext['cuda_version']} kernels for archs {ext['cuda_archs']}" if ext["cuda"] else "no CUDA kernels"
        print(f"fastzoo._C: C++ CPU kernels, {cuda}")
        paths = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512bf16": "AVX512-BF16 (the bf16 GEMMs)",
                 "amx_bf16": "AMX-BF16 (the bf16 GEMMs' 16-row blocks)"}
        on = [name for key, name in paths.items() if info["cpu_kernels"].get(key)]
        print(f"CPU kernel paths on this CPU: {', '.join(on) or 'generic (no AVX2)'}")
    print(f"GPUs: {', '.join(info['cuda_devices']) or 'none visible'}")
    print(f"backend setting: {info['backend']}")
    for device, names in info["runnable"].items():
        auto = f" (auto -> {info['auto'][device]})" if info["auto"] else ""
        print(f"runnable on {device}: {', '.join(names)}{auto}")
    for key, why in info["unavailable"].items():
        print(f"  {key}: {why}")
    return 0
