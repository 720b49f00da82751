"""`python -m fastzoo compile-report --arch 80,90 [--json FILE]`: registers, spills and shared memory of every
GPU kernel fastzoo ships, obtained by compiling, without a GPU.

- Triton: every @triton.jit kernel in every configuration registered in fastzoo.kernels (REGISTRY) is compiled
  for each arch with triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32)); registers, stack and
  local memory are read from the cubin with triton's bundled cuobjdump, spill bytes from the ptxas log (when the
  kernel was not in triton's cache; otherwise the stack frame, which is where spills go), shared memory from the
  compiled kernel's metadata.
- CUDA: the kernels of the built extension fastzoo/_C*.so (when built with CUDA) are read with
  cuobjdump --dump-resource-usage: REG / STACK / SHARED / LOCAL per kernel and arch (names demangled with
  c++filt when available). cuobjdump does not separate spills from stack arrays: a CUDA kernel with a stack
  frame is flagged, and fails the report only with --strict-cuda-stack.

Exit status: 0 when everything compiled with zero spills, 1 on a compile failure or a Triton spill,
2 on bad arguments.
"""
import argparse
import concurrent.futures as cf
import contextlib
import glob
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

KNOWN_ARCHS = (70, 75, 80, 86, 87, 89, 90)
_SPECS = None  # the registry, set before the worker pool forks


def parse_archs(text: str):
    archs = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d{2,3}", part) or int(part) not in KNOWN_ARCHS:
            raise ValueError(f"compile-report: bad --arch value {part!r} in {text!r}; expected a comma-separated "
                             f"list of compute capabilities written as numbers, e.g. 80,90 "
                             f"(known: {', '.join(map(str, KNOWN_ARCHS))})")
        if int(part) not in archs:
            archs.append(int(part))
    return archs


def _tool(name: str):
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else shutil.which(name)


def _demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return list(names)
    try:
        out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, timeout=60).stdout
        lines = out.splitlines()
        return lines if len(lines) == len(names) else list(names)
    except (OSError, subprocess.SubprocessError):
        return list(names)


def parse_resource_usage(text: str):
    """cuobjdump --dump-resource-usage output -> [{arch, function, REG, STACK, SHARED, LOCAL}]."""
    rows = []
    arch = None
    func = None
    for line in text.splitlines():
        m = re.match(r"\s*arch\s*=\s*(sm_\d+\w*)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function\s+(\S+?):?\s*$", line)
        if m:
            func = m.group(1)
            continue
        if func is not None and "REG:" in line:
            vals = dict((k, int(v)) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            rows.append(dict(arch=arch, function=func, regs=vals.get("REG", 0), stack=vals.get("STACK", 0),
                             shared=vals.get("SHARED", 0), local=vals.get("LOCAL", 0)))
            func = None
    return rows


def _parse_ptxas_log(text: str):
    regs = re.findall(r"Used (\d+) registers", text)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not regs or not spills:
        return None
    return int(regs[-1]), sum(int(a) + int(b) for a, b in spills)


def _compile_one(job):
    """Worker: compile registry entry `idx` for `arch`; returns a result row."""
    idx, arch = job
    spec = _SPECS[idx]
    row = dict(source="triton", kernel=spec.name, config=spec.label, arch=f"sm_{arch}", regs=None, spills=None,
               shared=None, stack=None, local=None, error=None, seconds=None)
    t0 = time.time()
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton import knobs

        src = triton.compiler.ASTSource(spec.fn, spec.signature, spec.constexprs)
        buf = io.StringIO()
        old = knobs.nvidia.dump_ptxas_log
        knobs.nvidia.dump_ptxas_log = True
        try:
            with contextlib.redirect_stdout(buf):
                kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=spec.options())
        finally:
            knobs.nvidia.dump_ptxas_log = old
        row["shared"] = int(kernel.metadata.shared)
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(kernel.asm["cubin"])
            cubin = f.name
        try:
            out = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True,
                                 text=True, timeout=120)
        finally:
            os.unlink(cubin)
        usage = parse_resource_usage(out.stdout)
        if not usage:
            raise RuntimeError(f"cuobjdump gave no resource usage: {out.stdout[-500:]} {out.stderr[-500:]}")
        u = usage[0]
        row.update(regs=u["regs"], stack=u["stack"], local=u["local"])
        log = _parse_ptxas_log(buf.getvalue())
        # spills: from the ptxas log when ptxas ran; for a cached kernel, its stack frame (Triton kernels have
        # no local arrays, so a stack frame is spill space)
        row["spills"] = log[1] if log is not None else u["stack"] + u["local"]
        row["spill_source"] = "ptxas" if log is not None else "stack"
    except Exception as e:  # a compile failure is a result row, reported and counted
        row["error"] = f"{type(e).__name__}: {str(e).strip()[:2000]}"
    row["seconds"] = round(time.time() - t0, 2)
    return row


def _load_registry():
    try:
        from .kernels import REGISTRY  # fastzoo.kernels
    except ImportError:
        from fastzoo.kernels import REGISTRY
    return REGISTRY


def triton_rows(archs, jobs: int):
    global _SPECS
    _SPECS = _load_registry()
    work = [(i, a) for a in archs for i in range(len(_SPECS))]
    if jobs <= 1:
        return [_compile_one(w) for w in work]
    ctx = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(_compile_one, work, chunksize=1))


def find_extension():
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_C*.so")) + glob.glob(os.path.join(here, "_C*.pyd")))
    return found[0] if found else None


def cuda_rows(archs, so_path=None):
    """(rows, note) for the CUDA kernels of the built extension."""
    so_path = so_path or find_extension()
    if so_path is None:
        return [], "fastzoo._C is not built (no fastzoo/_C*.so): no CUDA kernels to report"
    tool = _tool("cuobjdump")
    if tool is None:
        return [], "cuobjdump not found (neither bundled with triton nor on PATH): CUDA kernels not reported"
    out = subprocess.run([tool, "--dump-resource-usage", so_path], capture_output=True, text=True, timeout=600)
    usage = parse_resource_usage(out.stdout)
    if not usage:
        return [], f"{os.path.basename(so_path)} has no CUDA kernels (built without CUDA, or no device code)"
    names = _demangle([u["function"] for u in usage])
    wanted = {f"sm_{a}" for a in archs}
    rows = []
    for u, name in zip(usage, names):
        if u["arch"] not in wanted:
            continue
        short = re.sub(r"^void ", "", re.sub(r"\(.*\)$", "", name))  # drop return type and parameters
        rows.append(dict(source="cuda", kernel=short, config=name if short != name else "", arch=u["arch"],
                         regs=u["regs"], spills=None, shared=u["shared"], stack=u["stack"], local=u["local"],
                         error=None, seconds=None, mangled=u["function"]))
    present = {u["arch"] for u in usage}
    missing = sorted(wanted - present)
    note = f"{os.path.basename(so_path)}: {len(rows)} CUDA kernel rows"
    if missing:
        note += f"; no device code for {', '.join(missing)} in the extension"
    return rows, note


def _fmt(v):
    return "-" if v is None else str(v)


def print_table(rows, file=sys.stdout):
    head = ("source", "arch", "kernel", "config", "regs", "spills", "smem", "stack", "local")
    table = [head] + [(r["source"], r["arch"], r["kernel"], (r["config"] or "")[:70], _fmt(r["regs"]),
                       _fmt(r["spills"]) if not r["error"] else "FAIL", _fmt(r["shared"]), _fmt(r["stack"]),
                       _fmt(r["local"])) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for j, t in enumerate(table):
        print("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))), file=file)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=file)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastzoo compile-report",
                                description="Compile every fastzoo GPU kernel for the given archs (no GPU needed) "
                                            "and report registers, spills and shared memory.")
    p.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated numbers (default 80,90)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="parallel compile processes (default: min(2, cores))")
    p.add_argument("--no-triton", action="store_true", help="skip the Triton kernels")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels of fastzoo._C")
    p.add_argument("--extension", metavar="SO", help="path of the built extension (default: fastzoo/_C*.so)")
    p.add_argument("--strict-cuda-stack", action="store_true",
                   help="fail when a CUDA kernel has a stack frame (cuobjdump cannot tell spills from arrays)")
    args = p.parse_args(argv)
    try:
        archs = parse_archs(args.arch)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2

    t0 = time.time()
    rows, notes = [], []
    if not args.no_triton:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            print(f"compile-report: triton is not importable ({e}); cannot compile the Triton kernels",
                  file=sys.stderr)
            return 1
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            notes.append("note: TRITON_INTERPRET is set; triton.compile ignores it here")
        rows += triton_rows(archs, max(1, args.jobs))
    if not args.no_cuda:
        crow, note = cuda_rows(archs, args.extension)
        rows += crow
        notes.append(note)
    elapsed = time.time() - t0

    print_table(rows)
    failures = [r for r in rows if r["error"]]
    spills = [r for r in rows if r["source"] == "triton" and not r["error"] and r["spills"]]
    stacks = [r for r in rows if r["source"] == "cuda" and r["stack"]]
    print()
    n_tr = sum(r["source"] == "triton" for r in rows)
    print(f"{n_tr} Triton kernel builds ({len({r['kernel'] for r in rows if r['source'] == 'triton'})} kernels) "
          f"for {', '.join(f'sm_{a}' for a in archs)} in {elapsed:.1f} s; compiled only, not run")
    for n in notes:
        print(n)
    for r in failures:
        print(f"FAILED {r['source']} {r['kernel']} [{r['config']}] {r['arch']}: {r['error']}", file=sys.stderr)
    for r in spills:
        print(f"SPILLS {r['kernel']} [{r['config']}] {r['arch']}: {r['spills']} bytes", file=sys.stderr)
    for r in stacks:
        print(f"{'STACK' if args.strict_cuda_stack else 'warning: stack'} {r['kernel']} {r['arch']}: "
              f"{r['stack']} bytes stack frame (spills or local arrays)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(archs=[f"sm_{a}" for a in archs], seconds=round(elapsed, 1), notes=notes, rows=rows,
                           failures=len(failures), spilling=len(spills)), f, indent=1)
    bad = bool(failures or spills or (args.strict_cuda_stack and stacks))
    print("compile-report: " + ("FAILED" if bad else "OK: everything compiled, zero spills"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
