"""What a benchmark run leaves: a table on the terminal, a JSON file with every sample and the machine,
and a bar chart of the speedups over the reference."""
import json
import os
import platform

import torch


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from fastzoo import _ext
    return {"cpu": cpu, "cpu_kernels": dict(_ext._C.cpu_kernels()) if _ext.loaded() else None,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def print_table(rows, title):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    over = {r.get("speedup_over") for r in rows}
    speedup = f"speedup vs {over.pop()}" if len(over) == 1 else "speedup"
    headers = ["model", "batch", "variant", "median ms", "p25-p75 ms", "images/s", speedup, "max rel err"]
    lines = [[r["model"], str(r["batch"]), r["variant"], f"{r['median_ms']:.3f}",
              f"{r['p25_ms']:.3f}-{r['p75_ms']:.3f}", f"{r['images_per_s']:.1f}", f"{r['speedup']:.2f}x",
              "" if r.get("max_rel_err") is None else f"{r['max_rel_err']:.1e}"] for r in rows]
    if any("fp32_rel_diff" in r for r in rows):  # a bf16/fp16 run: the drift from the float32 model
        headers += ["vs fp32: max rel diff", "top-1 agree"]
        for line, r in zip(lines, rows):
            line += [f"{r['fp32_rel_diff']:.1e}", f"{100 * r['fp32_top1_agree']:.0f}%"] if "fp32_rel_diff" in r \
                else ["", ""]
    if any("speedup_vs_best_fp32_anchor" in r for r in rows):  # with float32 anchors (variant:fp32)
        headers.append("vs best fp32 anchor")
        for line, r in zip(lines, rows):
            line.append(f"{r['speedup_vs_best_fp32_anchor']:.2f}x" if "speedup_vs_best_fp32_anchor" in r else "")
    if Console is None:
        print(title)
        print(" | ".join(headers))
        for line in lines:
            print(" | ".join(line))
        return
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("model", "variant") else "right")
    for line in lines:
        table.add_row(*line)
    Console(width=max(140, Console().width)).print(table)


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)


def plot(path, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda g: (g[0], g[1]))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) * max(1, len(variants)) / 2), 4))
    for i, v in enumerate(variants):
        xs, ys = [], []
        for j, g in enumerate(groups):
            r = next((r for r in rows if (r["model"], r["batch"]) == g and r["variant"] == v), None)
            if r:
                xs.append(j + i * width)
                ys.append(r["speedup"])
        bars = ax.bar(xs, ys, width, label=v)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbatch {b}" for m, b in groups], fontsize=8)
    over = {r.get("speedup_over") for r in rows}
    ax.set_ylabel(f"speedup over {over.pop() if len(over) == 1 else 'the first variant'} (x)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
