"""`fastzoo bench --steps`: where a fused model's CPU time goes, step by step, and how it scales with threads.

Each step of the model's BlockChain (one fused op per block: the stem, every mbconv, the head conv; then, where
a forward runs the classifier head in the same call, the global average pool and the classifier's Linear layers)
is timed alone through a BlockChain of that one step, on 1 thread and on the bench's thread count, interleaved,
twice: warm (right after an untimed call, so its weights and input are in cache) and cold (the caches flushed
before every call by writing a buffer larger than the L3). Like the model's chain, a one-step chain packs its
weights once; through the public op, which packs them per call, efficientnet_b0's 14x14 blocks seemed to scale
1.2-1.3x from one thread to two, against 1.6-1.7x inside whole forwards (torch.profiler over the chain's per-step
ranges). The whole chain (with the head where the forward runs it) is timed the same way, so the table shows how
far a forward is from the warm and the cold sums (figures in BENCHMARKS.md).
"""
import time

import torch

import fastzoo
from fastzoo.layers import block_sequence
from fastzoo.models._common import FeaturesClassifier

from . import timing

FLUSH_BYTES = 64 * 1024 * 1024  # more than this machine's 32 MiB L3


def chains(model):
    """(BlockSequence, its blocks' (op name, args)) for each BlockSequence of the model, outermost first."""
    out = []
    for m in model.modules():
        if isinstance(m, block_sequence.BlockSequence):
            calls = block_sequence.BlockSequence._fused_calls(block_sequence._leaves(m))
            if calls is not None:
                out.append((m, calls))
    return out


def forward_chain(model):
    """(BlockSequence, (op name, args) per step, head) for the chain a batch-1 forward runs: the model's first
    BlockSequence, followed, where the model's forward hands its head to the chain (FeaturesClassifier) and the
    chain can take it, by the head's steps (global average pool, the classifier's Linear layers); head is ()
    where it does not."""
    found = chains(model)
    if not found:
        return None
    seq, calls = found[0]
    if isinstance(model, FeaturesClassifier) and model.features is seq:
        head = (model.avgpool, model.classifier)
        plan = block_sequence._head_plan(head)
        if plan is not None:
            return seq, calls + plan[1], head
    return seq, calls, ()


def _timed(fn, threads, rounds, flush):
    """{threads: median ms} of fn, the thread counts taking turns every round. Cold (flush given): flush() before
    each timed call; warm: an untimed call before it."""
    samples = {n: [] for n in threads}
    for _ in range(rounds):
        for n in threads:
            torch.set_num_threads(n)
            if flush:
                flush()
            else:
                fn()
            t0 = time.perf_counter()
            fn()
            samples[n].append(time.perf_counter() - t0)
    return {n: timing.summarize(v)["median_ms"] for n, v in samples.items()}


def _warm_cold(fn, threads, rounds, flush):
    """{"warm_<n>t_ms", "cold_<n>t_ms"} of fn for each thread count n."""
    return {f"{kind}_{n}t_ms": v for kind, fl in (("warm", None), ("cold", flush))
            for n, v in _timed(fn, threads, rounds, fl).items()}


def run(name, batch, img_size=224, rounds=20, threads=None, progress=print):
    """Rows {step, op, input shape, warm/cold ms per thread count} for the steps of the model's forward chain
    (forward_chain: its first BlockChain, with the classifier head where the forward runs it in the same call),
    and a last row for the whole chain."""
    threads = sorted({1, threads or torch.get_num_threads()})
    model = fastzoo.create_model(name).eval()
    found = forward_chain(model)
    if found is None:
        raise ValueError(f"fastzoo bench --steps: {name} has no fused block chain on this machine (CPU kernels "
                         f"not built, or the model has no BlockSequence)")
    seq, calls, head = found
    junk = torch.empty(FLUSH_BYTES // 4)
    flush = lambda: junk.fill_(1.0)
    rows = []
    restore = torch.get_num_threads()
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            first = x
            for i, (op, args) in enumerate(calls):
                step = block_sequence._build([(op, args)])
                fn = lambda step=step, x=x: step.run(x)
                row = {"step": i, "op": op, "input": list(x.shape), **_warm_cold(fn, threads, rounds, flush)}
                rows.append(row)
                progress(_line(row, threads))
                torch.set_num_threads(restore)
                x = fn()
            # the whole chain as a forward reruns it: with the head, the model's own forward (its one C++ check,
            # then the chain; a full forward_with_head compares every block's arguments in Python first)
            whole = (lambda: model(first)) if head else (lambda: seq(first))
            rows.append({"step": "chain", "op": "BlockChain.run", "input": list(first.shape),
                         **_warm_cold(whole, threads, rounds, flush)})
    finally:
        torch.set_num_threads(restore)
    total = {k: sum(r[k] for r in rows[:-1]) for k in rows[0] if k.endswith("_ms")}
    progress(_line({"step": "sum", "op": "of the steps", "input": [], **total}, threads))
    progress(_line(rows[-1], threads))
    return {"model": name, "batch": batch, "threads": threads, "rows": rows, "sum_of_steps": total}


def _line(row, threads):
    cols = "  ".join(f"{kind} " + " / ".join(f"{row[f'{kind}_{n}t_ms']:.3f}" for n in threads)
                     for kind in ("warm", "cold"))
    shape = "x".join(map(str, row["input"]))
    return f"{str(row['step']):>5s} {row['op']:16s} {shape:16s} ms on {'/'.join(map(str, threads))} threads: {cols}"
