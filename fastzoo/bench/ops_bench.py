"""`fastzoo bench --ops`: each fused op on the block shapes of MobileNetV3 / MobileNetV2 / EfficientNet-B0,
against the eager chain it replaces and torch.compile of that chain, with the bytes it must move, the
achieved GB/s, and the ratio to this machine's own copy time for the same bytes (measured here, at a
DRAM-sized and an L2-sized buffer)."""
import torch
import torch.nn.functional as F

import fastzoo

from . import timing

# (C, H, W, kernel, stride)
DW_SHAPES = [(16, 112, 112, 3, 2), (72, 56, 56, 3, 2), (88, 28, 28, 3, 1), (96, 28, 28, 3, 2), (240, 14, 14, 5, 1),
             (576, 7, 7, 5, 1), (144, 56, 56, 3, 1), (384, 14, 14, 3, 1)]
# (C, H, W, squeezed channels)
SE_SHAPES = [(96, 14, 14, 24), (576, 7, 7, 144), (240, 14, 14, 64)]
# (C, H, W, groups)
SHUFFLE_SHAPES = [(116, 28, 28, 2), (232, 14, 14, 2)]


def copy_bandwidth(nbytes, rounds=20, min_seconds=0.2):
    """GB/s of a plain tensor copy (read + write) of nbytes on this machine: the median of at least `rounds`
    copies and `min_seconds`, after a warm-up (20 cold copies of 512 KiB once gave 0.3 GB/s, other runs 74-85)."""
    src = torch.randn(max(1, nbytes // 8))
    dst = torch.empty_like(src)
    copy = lambda: dst.copy_(src)  # noqa: E731
    timing.warm_up(copy)
    s = timing.interleaved({"copy": copy}, rounds, min_seconds)["copy"]
    t = timing.summarize(s)["median_ms"] / 1e3
    return 2 * src.numel() * 4 / t / 1e9


def _bn(c):
    return torch.rand(c) + 0.5, torch.rand(c) - 0.5


def cases(batch, channels_last=False):
    """(name, shape label, fused fn, eager fn, bytes moved by the fused op)."""
    out = []
    for c, h, w, k, s in DW_SHAPES:
        x = torch.randn(batch, c, h, w)  # NCHW, as users run it (or channels_last, as fastzoo models do)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        wt = torch.randn(c, 1, k, k)
        scale, shift = _bn(c)
        bn_mean, bn_var = torch.zeros(c), torch.ones(c)

        def eager(x=x, wt=wt, c=c, k=k, s=s, scale=scale, shift=shift, m=bn_mean, v=bn_var):
            y = F.conv2d(x, wt, None, s, k // 2, 1, c)
            return F.hardswish(F.batch_norm(y, m, v, scale, shift, False, 0.0, 0.0))

        def fused(x=x, wt=wt, s=s, scale=scale, shift=shift):
            return fastzoo.ops.dwconv_bn_act(x, wt, scale, shift, s, -1, "hardswish")
        ho, wo = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
        out.append(("dwconv_bn_act", f"{c}x{h}x{w} k{k} s{s}", fused, eager, 4 * batch * c * (h * w + ho * wo)))
    for c, h, w, cs in SE_SHAPES:
        x = torch.randn(batch, c, h, w)
        w1, b1, w2, b2 = torch.randn(cs, c, 1, 1), torch.randn(cs), torch.randn(c, cs, 1, 1), torch.randn(c)

        def eager(x=x, w1=w1, b1=b1, w2=w2, b2=b2):
            g = F.adaptive_avg_pool2d(x, 1)
            g = F.hardsigmoid(F.conv2d(F.relu(F.conv2d(g, w1, b1)), w2, b2))
            return x * g

        def fused(x=x, w1=w1, b1=b1, w2=w2, b2=b2):
            return fastzoo.ops.squeeze_excite(x, w1, b1, w2, b2, "relu", "hardsigmoid")
        # x in and out, and the two FC weights: at batch 1 the weights are most of the bytes
        out.append(("squeeze_excite", f"{c}x{h}x{w} se{cs}", fused, eager, 4 * (batch * c * h * w * 2 + 2 * c * cs)))
    for c, h, w, g in SHUFFLE_SHAPES:
        x = torch.randn(batch, c, h, w)

        def eager(x=x, g=g):
            n, c_, h_, w_ = x.shape
            return x.view(n, g, c_ // g, h_, w_).transpose(1, 2).contiguous().view(n, c_, h_, w_)

        def fused(x=x, g=g):
            return fastzoo.ops.channel_shuffle(x, g)
        out.append(("channel_shuffle", f"{c}x{h}x{w} g{g}", fused, eager, 4 * batch * c * h * w * 2))
    return out


def run(batches, rounds=20, compile_eager=True, channels_last=False, progress=print, min_seconds=0.0):
    """Each case at least `rounds` interleaved rounds and `min_seconds` long: at batch 1 a call takes tens of
    microseconds, and a median of a few dozen single calls moved by 10-20% between runs."""
    l2 = copy_bandwidth(512 * 1024)
    dram = copy_bandwidth(256 * 1024 * 1024, rounds=5)
    rows = []
    for batch in batches:
        for op, label, fused, eager, nbytes in cases(batch, channels_last):
            fns = {"fused": fused, "eager": eager}
            if compile_eager:
                torch._dynamo.reset()  # every case shares eager's code object: a fresh compile, not a recompile
                compiled = torch.compile(eager)
                compiled()
                fns["compile"] = compiled
            for fn in fns.values():
                timing.warm_up(fn)
            samples = timing.interleaved(fns, rounds, min_seconds)
            stats = {k: timing.summarize(v) for k, v in samples.items()}
            med = {k: st["median_ms"] for k, st in stats.items()}
            copy_ms = nbytes / (dram if nbytes > 8 * 1024 * 1024 else l2) / 1e9 * 1e3
            row = {"op": op, "shape": label, "batch": batch, "bytes": nbytes, **{f"{k}_ms": v for k, v in med.items()},
                   "fused_gbps": nbytes / (med["fused"] / 1e3) / 1e9, "copy_ms": copy_ms,
                   "fused_over_copy": med["fused"] / copy_ms, "speedup_vs_eager": med["eager"] / med["fused"]}
            if "compile" in med:
                row["speedup_vs_compile"] = med["compile"] / med["fused"]
            row["spread_ms"] = {k: [st["p25_ms"], st["p75_ms"]] for k, st in stats.items()}
            row["samples_ms"] = {k: [v * 1e3 for v in vs] for k, vs in samples.items()}
            rows.append(row)
            progress(f"{op:16s} {label:20s} batch {batch:3d}: fused {med['fused']:.3f} ms (p25-p75 "
                     f"{stats['fused']['p25_ms']:.3f}-{stats['fused']['p75_ms']:.3f}, {stats['fused']['n']} calls), "
                     f"eager {med['eager']:.3f} ms"
                     + (f", compile {med['compile']:.3f} ms" if "compile" in med else "")
                     + f" | {row['fused_gbps']:.1f} GB/s, {row['fused_over_copy']:.1f}x the copy time, "
                     f"{row['speedup_vs_eager']:.1f}x eager")
    return {"copy_gbps": {"l2_sized_512KiB": l2, "dram_sized_256MiB": dram}, "rows": rows}
