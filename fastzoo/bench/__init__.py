"""`fastzoo bench`: fused models against the reference, the torchvision/timm model, torch.compile and
ONNX Runtime, timed interleaved, with medians, spreads and speedups (table, JSON, PNG)."""
import argparse
import copy
import sys

import torch

import fastzoo

from . import malloc, report, timing, variants as variants_mod

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_COMPARE = "reference,fused,compile,onnxruntime"
MIN_SECONDS_MODEL, MIN_SECONDS_OP = 3.0, 0.5  # --min-seconds defaults: per model and batch, per op case


def parser():
    p = argparse.ArgumentParser(prog="fastzoo bench", description=__doc__)
    p.add_argument("models", nargs="*", default=["mobilenetv3_small"], help="model names (default mobilenetv3_small)")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--channels-last", action="store_true", help="give the models channels_last input")
    p.add_argument("--compare", default=DEFAULT_COMPARE,
                   help=f"variants, comma-separated, from reference,fused,compile,onnxruntime,eager (default "
                        f"{DEFAULT_COMPARE}; eager = the torchvision/timm model itself); a suffix :fp32 (or "
                        f":bf16, :fp16) times that variant in that dtype whatever --dtype says, e.g. --dtype bf16 "
                        f"--compare fused,onnxruntime:fp32,compile:fp32 (bf16 against the best float32 anchor)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=30, help="timed rounds per variant (at least)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help=f"time each model and batch at least this long (default {MIN_SECONDS_MODEL:g}); with --ops, "
                        f"each op, shape and batch (default {MIN_SECONDS_OP:g})")
    p.add_argument("--json", metavar="FILE", help="write every sample and the machine to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the speedups")
    p.add_argument("--analytic", action="store_true",
                   help="no timing: kernel launches and HBM bytes of the eager chain and the fused path per block, "
                        "from the shapes, and the bandwidth-bound time on a GPU with --hbm-gbps")
    p.add_argument("--hbm-gbps", type=float, default=3350.0, help="GPU memory bandwidth for --analytic (H100: 3350)")
    p.add_argument("--per-block", action="store_true", help="with --analytic: print every block")
    p.add_argument("--ops", action="store_true",
                   help="each fused op on MobileNet/EfficientNet block shapes vs the eager chain and torch.compile, "
                        "with GB/s and the ratio to this machine's copy time")
    p.add_argument("--no-compile", action="store_true", help="with --ops: skip torch.compile of the eager chain")
    p.add_argument("--steps", action="store_true",
                   help="each step of the models' fused block chain (with the classifier head) alone, warm and "
                        "cold (caches flushed), on 1 thread and on --threads, and the whole chain: where the time "
                        "goes and how it scales")
    p.add_argument("--malloc-trim", action="store_true",
                   help="leave glibc malloc returning freed memory to the OS (default: kept, as jemalloc/tcmalloc "
                        "would; otherwise every variant pays page faults on buffers another one freed)")
    return p


def run_analytic(args, batches, dtype):
    from . import analytic

    payload = []
    for name in args.models:
        model = fastzoo.create_model(name).eval().to(dtype=dtype)
        for batch in batches:
            x = torch.randn(batch, 3, args.img_size, args.img_size, dtype=dtype)
            with fastzoo.backend("reference"):
                rows = analytic.analyze(model, x)
            tot = analytic.totals(rows, args.hbm_gbps)
            payload.append({"model": name, "batch": batch, "blocks": rows, "totals": tot})
            print(f"{name} batch {batch} {args.dtype} {args.img_size}x{args.img_size} at {args.hbm_gbps:.0f} GB/s:")
            if args.per_block:
                for r in rows:
                    print(f"  {r['block']:28s} {r['kind']:12s} eager {r['eager_launches']:3d} launches "
                          f"{r['eager_bytes'] / 1e6:9.2f} MB | fused {r['fused_launches']:3d} launches "
                          f"{r['fused_bytes'] / 1e6:9.2f} MB")
            for path in ("eager", "fused"):
                t = tot[path]
                print(f"  {path:5s}: {t['launches']:4d} launches, {t['bytes'] / 1e6:9.2f} MB, "
                      f"{t['hbm_ms']:.4f} ms bandwidth-bound, {t['with_launch_ms']:.4f} ms with 3 us per launch")
            print(f"  fused/eager bytes: {tot['fused']['bytes'] / tot['eager']['bytes']:.2f}, "
                  f"launches: {tot['fused']['launches'] / tot['eager']['launches']:.2f}")
    if args.json:
        report.write_json(args.json, {"args": vars(args), "analytic": payload})
        print(f"wrote {args.json}")
    return 0


def _progress(total):
    try:
        from rich.progress import Progress
    except ImportError:
        return None
    return Progress(transient=True)


def _variant_dtype(v, dtype):
    """("onnxruntime", float32) for "onnxruntime:fp32": a variant timed in another dtype than --dtype's (the
    float32 anchors of a bf16 run); (v, dtype) without a suffix."""
    name, _, suffix = v.partition(":")
    if suffix and suffix not in DTYPES:
        raise ValueError(f"fastzoo bench: variant {v!r}: expected a dtype suffix from {', '.join(DTYPES)}")
    return name, DTYPES[suffix] if suffix else dtype


def bench_model(name, batch, args, dtype, progress=None):
    device = args.device
    wanted = [v.strip() for v in args.compare.split(",") if v.strip()]
    with torch.inference_mode(False):  # real parameters, not inference tensors
        model32 = fastzoo.create_model(name).eval().to(device=device)
        models = {torch.float32: model32}
        for dt in {_variant_dtype(v, dtype)[1] for v in wanted}:
            models.setdefault(dt, copy.deepcopy(model32).to(dtype=dt))
    x32 = torch.randn(batch, 3, args.img_size, args.img_size, device=device)
    inputs = {dt: x32.to(dt) for dt in models}
    if args.channels_last:
        inputs = {dt: x.contiguous(memory_format=torch.channels_last) for dt, x in inputs.items()}
    logits32 = None
    if dtype != torch.float32:  # each variant's drift from the float32 model on the same input
        with torch.no_grad(), fastzoo.backend("reference"):
            logits32 = model32(x32).float().cpu()
    fns, setup, skipped = {}, {}, {}
    for v in wanted:
        base_name, dt = _variant_dtype(v, dtype)
        target, x = models[dt], inputs[dt]
        if base_name == "eager":
            lib = variants_mod.library_model(name, fastzoo.models._registry.aliases_of(name), target)
            if lib is None:
                skipped[v] = "no torchvision/timm model of that name installed"
                continue
            v = v.replace("eager", f"eager-{lib[0]}", 1)
            base_name, target = f"eager-{lib[0]}", lib[1].eval().to(device=device, dtype=dt)
        try:
            fns[v], setup[v] = variants_mod.build(base_name, target, x)
            setup[v] += timing.warm_up(fns[v], device=device)
        except Exception as e:  # a variant that cannot run here is reported, not fatal
            skipped[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            fns.pop(v, None)
    outputs = {v: fn() for v, fn in fns.items()}
    samples = timing.interleaved(fns, args.rounds, args.min_seconds, device, progress)
    base = outputs.get("reference")
    rows = []
    # speedups over the reference, or over the first variant asked for when the reference is not
    baseline = "reference" if "reference" in samples else next(iter(samples), None)
    base_median = timing.summarize(samples[baseline])["median_ms"] if baseline else None
    # a run in another dtype with float32 anchors (variants but fused, suffixed :fp32): the fastest of them
    anchors = [timing.summarize(s)["median_ms"] for v, s in samples.items()
               if dtype != torch.float32 and v.endswith(":fp32") and not v.startswith("fused")]
    for v, s in samples.items():
        st = timing.summarize(s)
        out = outputs[v]
        out = torch.as_tensor(out[0] if isinstance(out, list) else out).float().cpu()
        err = None
        if base is not None:
            b = base.float().cpu()
            err = ((out - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
        drift = {}
        if logits32 is not None:
            drift = {"fp32_rel_diff": ((out - logits32).abs().max() / logits32.abs().max()).item(),
                     "fp32_top1_agree": (out.argmax(1) == logits32.argmax(1)).float().mean().item()}
        if anchors:
            drift["speedup_vs_best_fp32_anchor"] = min(anchors) / st["median_ms"]
        rows.append({"model": name, "batch": batch, "variant": v, **st, **drift,
                     "images_per_s": batch / (st["median_ms"] / 1e3),
                     "speedup": base_median / st["median_ms"], "speedup_over": baseline,
                     "setup_s": setup[v], "max_rel_err": err, "samples_ms": [t * 1e3 for t in s]})
    return rows, skipped


def run_steps(args, batches):
    from . import steps

    if args.device != "cpu" or args.dtype != "fp32":
        print(f"fastzoo bench --steps times the float32 CPU block chain; got --device {args.device} --dtype "
              f"{args.dtype}", file=sys.stderr)
        return 2
    payload = []
    for name in args.models:
        for batch in batches:
            print(f"{name} batch {batch} {args.img_size}x{args.img_size}, median ms of {args.rounds} rounds:")
            try:
                payload.append(steps.run(fastzoo.models.canonical_name(name), batch, args.img_size, args.rounds,
                                         args.threads))
            except ValueError as e:
                print(e, file=sys.stderr)
                return 2
    if args.json:
        report.write_json(args.json, {"args": vars(args), "machine": report.machine(), "steps": payload})
        print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.min_seconds is None:
        args.min_seconds = MIN_SECONDS_OP if args.ops else MIN_SECONDS_MODEL
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    try:
        batches = [int(b) for b in args.batch.split(",")]
        if any(b < 1 for b in batches):
            raise ValueError
    except ValueError:
        print(f"fastzoo bench: --batch expects positive integers separated by commas, got {args.batch!r}",
              file=sys.stderr)
        return 2
    for name in args.models:
        try:
            fastzoo.models.canonical_name(name)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
    try:
        for v in args.compare.split(","):
            _variant_dtype(v.strip(), dtype)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if args.analytic:
        return run_analytic(args, batches, dtype)
    allocator = None if args.malloc_trim else malloc.keep_freed_memory()
    if allocator:
        print(allocator)
    if args.steps:
        return run_steps(args, batches)
    if args.ops:
        from . import ops_bench
        with torch.inference_mode():
            result = ops_bench.run(batches, args.rounds, not args.no_compile, args.channels_last,
                                   min_seconds=args.min_seconds)
        bw = result["copy_gbps"]
        print(f"copy bandwidth here: {bw['l2_sized_512KiB']:.1f} GB/s (512 KiB), {bw['dram_sized_256MiB']:.1f} GB/s "
              f"(256 MiB)")
        if args.json:
            report.write_json(args.json, {"args": vars(args), "machine": {**report.machine(), "allocator": allocator},
                                          **result})
            print(f"wrote {args.json}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastzoo bench: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    rows, skipped = [], {}
    bar = _progress(len(args.models) * len(batches))
    with torch.inference_mode(), (bar or _null()):
        for name in args.models:
            for batch in batches:
                task = bar.add_task(f"{name} batch {batch}", total=args.rounds) if bar else None
                advance = (lambda n, t=task: bar.advance(t, n)) if bar else None
                r, s = bench_model(fastzoo.models.canonical_name(name), batch, args, dtype, advance)
                rows += r
                skipped.update({f"{name} batch {batch} {k}": v for k, v in s.items()})
                if bar:
                    bar.remove_task(task)
    info = {**report.machine(), "allocator": allocator}
    title = (f"fastzoo bench: {args.device} {args.dtype} {args.img_size}x{args.img_size}, "
             f"{info['threads']} threads, {info['cpu'] if args.device == 'cpu' else info['gpu']}")
    report.print_table(rows, title)
    for k, why in skipped.items():
        print(f"skipped {k}: {why}")
    if args.json:
        report.write_json(args.json, {"args": vars(args), "machine": info, "results": rows, "skipped": skipped})
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot, rows, title)
        print(f"wrote {args.plot}")
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
