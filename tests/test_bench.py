"""fastzoo bench end to end on a tiny size (no speed is asserted: speed lives in BENCHMARKS.md), and the
analytic byte counts checked by hand for one block."""
import gc
import json
import platform
import weakref

import pytest
import torch

from fastzoo.bench import analytic, timing
from fastzoo.bench.ops_bench import DW_SHAPES, SE_SHAPES, SHUFFLE_SHAPES
from fastzoo.bench import main as bench_main
from fastzoo.layers import MBConv


def test_bench_end_to_end(tmp_path):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    pytest.importorskip("matplotlib")
    rc = bench_main(["mobilenetv3_small", "--batch", "1,2", "--img-size", "32", "--rounds", "3", "--min-seconds", "0",
                     "--compare", "reference,fused", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {(r["batch"], r["variant"]) for r in data["results"]} == {(1, "reference"), (1, "fused"), (2, "reference"),
                                                                     (2, "fused")}
    for r in data["results"]:
        assert len(r["samples_ms"]) >= 3 and r["median_ms"] > 0
        assert r["max_rel_err"] < 1e-4, "fused and reference must agree before their speeds mean anything"
    assert data["machine"]["threads"] >= 1 and data["machine"]["torch"] == torch.__version__
    if platform.libc_ver()[0] == "glibc":  # freed buffers kept: no variant pays page faults for another's frees
        assert data["machine"]["allocator"].startswith("glibc malloc keeps freed memory")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in data["results"]:
        assert r["speedup_over"] == "reference"
        base = next(b for b in data["results"] if b["batch"] == r["batch"] and b["variant"] == "reference")
        assert r["speedup"] == pytest.approx(base["median_ms"] / r["median_ms"])


def test_bench_without_the_reference_compares_with_the_first_variant(tmp_path):
    out = tmp_path / "b.json"
    assert bench_main(["mobilenetv3_small", "--batch", "1", "--img-size", "32", "--rounds", "2", "--min-seconds", "0",
                       "--compare", "fused,reference", "--malloc-trim", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["speedup_over"] for r in data["results"]} == {"reference"}
    assert data["machine"]["allocator"] is None  # --malloc-trim: glibc's settings left alone
    assert bench_main(["mobilenetv3_small", "--batch", "1", "--img-size", "32", "--rounds", "2", "--min-seconds", "0",
                       "--compare", "fused", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["speedup_over"] == "fused" and r["speedup"] == 1.0  # was nan without the reference


def test_bench_bf16_reports_the_drift_from_fp32(tmp_path):
    out = tmp_path / "b.json"
    rc = bench_main(["mobilenetv3_small", "--batch", "4", "--img-size", "32", "--rounds", "2", "--min-seconds", "0",
                     "--dtype", "bf16", "--compare", "reference,fused", "--json", str(out)])
    assert rc == 0
    for r in json.loads(out.read_text())["results"]:
        assert 0 < r["fp32_rel_diff"] < 0.2  # bf16 rounding: visible, but far from a wrong answer
        assert 0 <= r["fp32_top1_agree"] <= 1


def test_bench_bf16_against_float32_anchors(tmp_path, capsys):
    """--dtype bf16 with variants suffixed :fp32: those run the float32 model, side by side with the bf16 ones,
    and every row says how it compares with the fastest float32 anchor (fused:fp32 is not an anchor)."""
    out = tmp_path / "b.json"
    rc = bench_main(["mobilenetv3_small", "--batch", "2", "--img-size", "32", "--rounds", "2", "--min-seconds", "0",
                     "--dtype", "bf16", "--compare", "fused,reference:fp32,fused:fp32", "--json", str(out)])
    assert rc == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"fused", "reference:fp32", "fused:fp32"}
    assert rows["reference:fp32"]["fp32_rel_diff"] < 1e-5 < rows["fused"]["fp32_rel_diff"] < 0.2
    anchor = rows["reference:fp32"]["median_ms"]
    for r in rows.values():
        assert r["speedup_vs_best_fp32_anchor"] == pytest.approx(anchor / r["median_ms"])
    assert "anchor" in capsys.readouterr().out  # the column (its header wrapped as the table needs)
    assert bench_main(["--dtype", "bf16", "--compare", "fused,onnxruntime:fp64"]) == 2
    assert "variant 'onnxruntime:fp64': expected a dtype suffix from fp32, bf16, fp16" in capsys.readouterr().err


def test_bench_rejects_bad_arguments(capsys):
    assert bench_main(["no_such_model"]) == 2
    assert "unknown model name 'no_such_model'" in capsys.readouterr().err
    assert bench_main(["--batch", "0"]) == 2
    assert "--batch expects positive integers" in capsys.readouterr().err


def test_interleaved_times_without_garbage_collection():
    """Timed calls run with the collector off (as timeit's do), every variant once per round; the collector is
    back on afterwards and a reference cycle a call made is gone by then."""
    class Node:
        pass

    seen, cycles = {"a": [], "b": []}, []

    def call(name):
        seen[name].append(gc.isenabled())
        node = Node()
        node.me = node
        cycles.append(weakref.ref(node))

    assert gc.isenabled()
    samples = timing.interleaved({"a": lambda: call("a"), "b": lambda: call("b")}, rounds=5)
    assert [len(samples["a"]), len(samples["b"])] == [5, 5] and all(t >= 0 for t in samples["a"] + samples["b"])
    assert seen == {"a": [False] * 5, "b": [False] * 5}
    assert gc.isenabled()
    assert all(ref() is None for ref in cycles)


def test_analytic_bytes_by_hand():
    """An MBConv 16 -> (expand 64, dw k3 s1, SE 16) -> 16 with residual, batch 2 at 8x8, fp32."""
    block = MBConv(16, 16, 3, 1, 64, 16, "hardswish").eval()
    x = torch.randn(2, 16, 8, 8)
    rows = analytic.analyze(torch.nn.Sequential(block), x)
    assert len(rows) == 1
    r = rows[0]
    e = 4
    x_el, h_el = 2 * 16 * 64, 2 * 64 * 64
    # fused: expand (x + w + h), dw (h + w + h), SE FCs (2 weights), project (h + w + y + residual x)
    fused = (x_el + 64 * 16 + h_el) + (h_el + 64 * 9 + h_el) + 2 * 64 * 16 + (h_el + 16 * 64 + x_el + x_el)
    assert r["fused_launches"] == 4 and r["fused_bytes"] == fused * e
    # eager: expand conv/bn/act, dw conv/bn/act, SE mean/fc1/act/fc2/gate/mul, project conv/bn, add
    assert r["eager_launches"] == 3 + 3 + 6 + 3
    expand = (x_el + 64 * 16 + h_el) + 2 * h_el + 2 * h_el
    dw = (h_el + 64 * 9 + h_el) + 2 * h_el + 2 * h_el
    se = (h_el + 2 * 64) + (2 * (64 + 16) + 64 * 16) + 2 * 2 * 16 + (2 * (64 + 16) + 64 * 16) + 2 * 2 * 64 + 2 * h_el
    project = (h_el + 16 * 64 + x_el) + 2 * x_el + 3 * x_el
    assert r["eager_bytes"] == (expand + dw + se + project) * e


def test_analytic_cli(capsys):
    assert bench_main(["mobilenetv3_small", "--analytic", "--batch", "1", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "fused/eager bytes" in out and "launches" in out


def test_bench_steps(tmp_path):
    """--steps: one row per step of the model's forward chain (each fed the previous step's output), the
    classifier head's pool and two Linear layers included, plus the whole chain, warm and cold on 1 and 2
    threads, and the sums of the steps."""
    import fastzoo
    from fastzoo.bench import steps
    out = tmp_path / "s.json"
    rc = bench_main(["mobilenetv3_small", "--steps", "--batch", "1", "--img-size", "32", "--rounds", "2",
                     "--threads", "2", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())["steps"][0]
    rows = data["rows"]
    calls = steps.forward_chain(fastzoo.mobilenetv3_small().eval())[1]
    assert [r["op"] for r in rows[:-1]] == [op for op, _ in calls] and rows[-1]["step"] == "chain"
    assert [r["op"] for r in rows[-4:-1]] == ["global_avg_pool", "pwconv_bn_act", "pwconv_bn_act"]
    assert rows[-3]["input"] == [1, 576, 1, 1] and rows[-2]["input"] == [1, 1024, 1, 1]  # the Linear layers
    assert rows[0]["input"] == [1, 3, 32, 32] and rows[1]["input"][2:] == [16, 16]
    keys = {f"{kind}_{n}t_ms" for kind in ("warm", "cold") for n in (1, 2)}
    assert all(keys <= r.keys() and all(r[k] > 0 for k in keys) for r in rows)
    assert data["sum_of_steps"]["cold_2t_ms"] == pytest.approx(sum(r["cold_2t_ms"] for r in rows[:-1]))


def test_forward_chain_head():
    """forward_chain takes the classifier head only where the forward runs it in its chain: not for a model
    whose head is not features -> avgpool -> classifier of Linear layers, and not once the head has a hook."""
    import fastzoo
    from fastzoo.bench import steps
    model = fastzoo.efficientnet_b0().eval()
    seq, calls, head = steps.forward_chain(model)
    assert head == (model.avgpool, model.classifier) and seq is model.features
    assert [op for op, _ in calls[-2:]] == ["global_avg_pool", "pwconv_bn_act"]
    assert calls[-1][1][0].shape == (1000, 1280, 1, 1)
    model.classifier[-1].register_forward_hook(lambda *a: None)
    seq, calls_hooked, head = steps.forward_chain(model)
    assert head == () and len(calls_hooked) == len(calls) - 2


def test_bench_steps_refuses(capsys):
    """A model with no fused block chain, or a dtype other than float32: a clear error, exit status 2."""
    assert bench_main(["resnet18", "--steps", "--batch", "1", "--img-size", "32", "--rounds", "1"]) == 2
    assert "resnet18 has no fused block chain" in capsys.readouterr().err
    assert bench_main(["mobilenetv3_small", "--steps", "--dtype", "bf16", "--batch", "1", "--rounds", "1"]) == 2
    assert "--steps times the float32 CPU block chain; got --device cpu --dtype bf16" in capsys.readouterr().err


def test_bench_ops(tmp_path):
    """--ops end to end at batch 1: every op case gets a row with its samples, their spread, and the ratios."""
    out = tmp_path / "ops.json"
    assert bench_main(["--ops", "--batch", "1", "--rounds", "3", "--min-seconds", "0", "--no-compile",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert len(rows) == len(DW_SHAPES) + len(SE_SHAPES) + len(SHUFFLE_SHAPES)
    assert {r["op"] for r in rows} == {"dwconv_bn_act", "squeeze_excite", "channel_shuffle"}
    for r in rows:
        for v in ("fused", "eager"):
            samples = r["samples_ms"][v]
            assert len(samples) >= 3 and min(samples) > 0
            p25, p75 = r["spread_ms"][v]
            assert p25 <= r[f"{v}_ms"] <= p75
        assert r["speedup_vs_eager"] == pytest.approx(r["eager_ms"] / r["fused_ms"])
        assert r["fused_over_copy"] == pytest.approx(r["fused_ms"] / r["copy_ms"])
    assert all(v > 0 for v in data["copy_gbps"].values())
