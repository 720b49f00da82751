"""fastzoo train on tiny generated ImageFolders (a few 24 px PNGs per colour class): checkpoints, loss,
exact resume, torchrun DDP, kill/Ctrl-C and resume, atomic writes, bad input."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import fastzoo
from fastzoo import cli
from fastzoo.train import checkpoint, config, optim, train

from data_helpers import color_dataset, write_png

pytest.importorskip("torchvision")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(model="mobilenetv3_small", img_size=24, batch_size=6, lr=0.05, workers=0, log_interval=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and far faster than two OpenMP threads on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    return color_dataset(tmp_path_factory.mktemp("colors"))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def env():
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e["OMP_NUM_THREADS"] = "1"
    e.pop("RANK", None)
    e.pop("WORLD_SIZE", None)
    return e


def test_training_writes_checkpoints_and_the_loss_goes_down(colors, tmp_path):
    out = tmp_path / "run"
    r = train(data=colors, epochs=4, out=str(out), tensorboard=True, **TINY)
    losses = [h["train_loss"] for h in r["history"]]
    assert losses[-1] < losses[0] - 0.2, losses  # colour classes are easy
    assert r["stopped"] is None and r["epoch"] == 4 and r["step"] == 4 * 4  # 24 images / 6 = 4 steps an epoch
    for name in ("last.pt", "best.pt", "train.log", "config.json"):
        assert (out / name).is_file(), name
    ck = load(out / "last.pt")  # weights_only: nothing but tensors and plain data
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "batch_in_epoch", "step", "best_top1", "ranks",
            "config", "classes"} <= set(ck)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (4, 0, 16)
    assert ck["classes"] == ["blue", "green", "red"] and "torch" in ck["ranks"][0]["rng"]
    assert load(out / "best.pt")["best_top1"] == max(h["top1"] for h in r["history"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "mobilenetv3_small" and cfg["world_size"] == 1 and cfg["steps_per_epoch"] == 4
    log = (out / "train.log").read_text()
    assert "epoch 4/4 step 16 train loss" in log and "top-1" in log
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # the zoo's loader reads a training checkpoint as weights
    m = fastzoo.create_model("mobilenetv3_small", num_classes=3, weights=str(out / "best.pt"))
    assert torch.equal(m.state_dict()["classifier.3.weight"], load(out / "best.pt")["model"]["classifier.3.weight"])


@pytest.mark.parametrize("opts", [
    dict(warmup_epochs=0.5, label_smoothing=0.1, nesterov=True),
    dict(optimizer="adamw", lr=1e-3, grad_accum=2, schedule="step", lr_step_epochs=1, batch_size=4),
], ids=["sgd-cosine-warmup", "adamw-step-accum2"])
def test_resume_after_max_steps_equals_an_uninterrupted_run(colors, tmp_path, opts):
    kw = dict(TINY, data=colors, epochs=2, **opts)
    whole = train(out=str(tmp_path / "whole"), **kw)
    first = train(out=str(tmp_path / "cut"), max_steps=2, **kw)  # stops inside epoch 1 (3 or 4 steps)
    ck = load(tmp_path / "cut" / "last.pt")
    assert first["stopped"] == "max_steps" and ck["epoch"] == 0 and ck["step"] == 2 and ck["batch_in_epoch"] > 0
    rest = train(out=str(tmp_path / "cut"), resume=str(tmp_path / "cut" / "last.pt"), **kw)
    assert rest["step"] == whole["step"] and rest["epoch"] == 2
    a, b = load(tmp_path / "whole" / "last.pt"), load(tmp_path / "cut" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), k
    # the resumed epoch's train loss counts the batches before the stop too
    assert rest["history"][-1]["train_loss"] == pytest.approx(whole["history"][-1]["train_loss"])
    assert rest["history"][0]["top1"] == whole["history"][0]["top1"]


def test_an_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def dies_halfway(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)  # half the bytes, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ck = checkpoint.load(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    # a half-written file (what a plain torch.save to last.pt would leave) is a clear error, not a crash later
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="broken.pt"):
        checkpoint.load(tmp_path / "broken.pt")


def _launch(args, log):
    return subprocess.Popen([sys.executable, "-m", "fastzoo", "train", *args], env=env(), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def _wait_for(pred, proc, timeout=120):
    end = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            return False
        assert time.time() < end, "timed out"
        time.sleep(0.02)
    return True


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run_args(data, out):
    # 60 images, batch 2: 30 batches an epoch in one process, 15 a rank under torchrun
    return ["--model", "mobilenetv3_small", "--data", data, "--img-size", "24", "--epochs", "3", "--batch-size",
            "2", "--workers", "0", "--lr", "0.01", "--out", str(out), "--log-interval", "1"]


def _logged(trainlog, s):
    return lambda: trainlog.is_file() and s in trainlog.read_text()


def test_ctrl_c_mid_epoch_writes_last_pt_and_resume_finishes(tmp_path):
    data = color_dataset(tmp_path / "data", n_train=20, n_val=2)
    out = tmp_path / "run"
    args = _run_args(data, out)
    with open(tmp_path / "stdout1", "w") as f:  # Ctrl-C inside epoch 1: last.pt at that step, exit 130
        p = _launch(args, f)
        assert _wait_for(_logged(out / "train.log", "epoch 1 step 2 "), p)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=120) == 130, (tmp_path / "stdout1").read_text()
    ck = load(out / "last.pt")
    assert ck["epoch"] == 0 and 0 < ck["batch_in_epoch"] < 30 and ck["step"] == ck["batch_in_epoch"]
    stopped_at = ck["step"]
    with open(tmp_path / "stdout2", "w") as f:
        p = _launch(args + ["--resume", str(out / "last.pt")], f)
        assert p.wait(timeout=300) == 0, (tmp_path / "stdout2").read_text()
    log = (out / "train.log").read_text()
    assert f"resumed from {out / 'last.pt'}: epoch 1, batch {stopped_at}, step {stopped_at}" in log
    ck = load(out / "last.pt")
    assert (ck["epoch"], ck["step"]) == (3, 90)  # the count of a run never stopped


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_a_rank_killed_mid_epoch_then_torchrun_resume(tmp_path):
    data = color_dataset(tmp_path / "data", n_train=20, n_val=2)
    out = tmp_path / "run"
    args = _run_args(data, out)
    trainlog = out / "train.log"
    with open(tmp_path / "stdout1", "w") as f:  # SIGKILL one rank inside epoch 2, after epoch 1's last.pt
        p = subprocess.Popen(TORCHRUN + ["-m", "fastzoo", "train", *args], env=env(), cwd=ROOT, stdout=f,
                             stderr=subprocess.STDOUT)
        started = _wait_for(_logged(trainlog, "epoch 2 step 17 "), p, timeout=200)
        ranks = _children(p.pid) if started else []
        for pid in ranks[-1:]:
            os.kill(pid, signal.SIGKILL)
        rc = p.wait(timeout=120)
    assert started and len(ranks) == 2, (tmp_path / "stdout1").read_text()
    assert rc != 0  # torchrun saw the rank die and stopped the job
    ck = load(out / "last.pt")  # the kill could not break it
    assert ck["batch_in_epoch"] == 0 and ck["epoch"] in (1, 2) and ck["world_size"] == 2
    done = ck["epoch"]
    with open(tmp_path / "stdout2", "w") as f:  # relaunch: only the unfinished epoch is redone
        p = subprocess.run(TORCHRUN + ["-m", "fastzoo", "train", *args, "--resume", str(out / "last.pt")],
                           env=env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    assert p.returncode == 0, (tmp_path / "stdout2").read_text()
    log = trainlog.read_text()
    assert f"resumed from {out / 'last.pt'}: epoch {done + 1}, batch 0, step {15 * done}" in log
    ck = load(out / "last.pt")
    assert (ck["epoch"], ck["step"]) == (3, 45)
    for e in (1, 2, 3):
        assert f"epoch {e}/3 step {15 * e} train loss" in log


def test_torchrun_two_ranks_see_different_samples(colors, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastzoo",
           "train", "--model", "mobilenetv3_small", "--data", colors, "--img-size", "24", "--epochs", "2",
           "--batch-size", "4", "--grad-accum", "2", "--workers", "0", "--out", str(out)]
    r = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "train.log").read_text()
    # 24 images / (4 x 2 ranks) = 3 batches a rank: optimizer steps after batches 2 and 3 (no_sync on the 1st)
    assert "2 process(es) on cpu" in log and "batch 4x2x2, 2 steps/epoch" in log
    for epoch in (1, 2):
        m = re.search(rf"epoch {epoch} first batch \(1/3\) samples: rank 0 (\[.*?\]); rank 1 (\[.*?\])", log)
        r0, r1 = json.loads(m.group(1)), json.loads(m.group(2))
        assert len(r0) == len(r1) == 4 and not set(r0) & set(r1), (r0, r1)
    assert "(12 images)" in log  # validation sharded over the ranks, counted once
    ck = load(out / "last.pt")
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2 and ck["step"] == 4
    assert not any(k.startswith("module.") for k in ck["model"])


def test_amp_bf16_grad_accum_channels_last_plateau(colors, tmp_path):
    r = train(data=colors, out=str(tmp_path / "amp"), epochs=1, amp="bf16", grad_accum=2, channels_last=True,
              schedule="plateau", warmup_epochs=0.5, **dict(TINY, model="shufflenetv2_x0_5", batch_size=4))
    assert r["step"] == 3 and r["history"][0]["n"] == 12


def test_amp_bf16_through_the_fused_ops(colors, tmp_path):
    # mobilenetv3: the SE op in train mode and the mbconv op in eval mode take autocast's bf16
    r = train(data=colors, out=str(tmp_path / "amp"), epochs=1, amp="bf16", max_steps=2, **TINY)
    assert r["step"] == 2


def test_no_weight_decay_on_bn_and_bias():
    m = fastzoo.create_model("resnet18", num_classes=3)
    decay, no_decay = optim.param_groups(m, 1e-4)
    names = {id(p): n for n, p in m.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or ".bn" in names[id(p)] or names[id(p)].startswith("bn")
               or "downsample.1" in names[id(p)] for p in no_decay["params"])
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in m.named_parameters() if p.ndim > 1}


# -- bad input -------------------------------------------------------------------------------------------

def test_data_without_train_or_val(tmp_path, capsys):
    os.makedirs(tmp_path / "d" / "train" / "a")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "d" / "val"))):
        train(model="mobilenetv3_small", data=str(tmp_path / "d"), out=str(tmp_path / "o"))
    assert cli.main(["train", "--model", "mobilenetv3_small", "--data", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_empty_class_folder_is_named(colors, tmp_path, capsys):
    data = color_dataset(tmp_path / "d", n_train=2, n_val=1)
    os.makedirs(os.path.join(data, "train", "purple"))
    os.makedirs(os.path.join(data, "val", "purple"))
    rc = cli.main(["train", "--model", "mobilenetv3_small", "--data", data, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and os.path.join(data, "train", "purple") in err and "empty class folder" in err


def test_undecodable_image_is_skipped_with_a_warning_naming_it(tmp_path):
    data = color_dataset(tmp_path / "d", n_train=4, n_val=2)
    bad = os.path.join(data, "train", "red", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.warns(UserWarning, match="broken.png"):
        r = train(data=data, out=str(tmp_path / "o"), epochs=1, **dict(TINY, batch_size=4))
    assert r["epoch"] == 1 and r["history"][0]["n"] == 6
    assert f"skipped undecodable image {bad}" in (tmp_path / "o" / "train.log").read_text()


def test_bad_options(colors, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "mobilenetv3_small", "--data", colors, "--no-such-option"])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "mobilenetv3_small", "--data", colors, "--optimizer", "lion"])
    assert e.value.code == 2 and "invalid choice: 'lion'" in capsys.readouterr().err
    with pytest.raises(TypeError, match="unknown option"):
        train(model="mobilenetv3_small", data=colors, bacth_size=3)
    with pytest.raises(ValueError, match="optimizer='lion' is not one of sgd, adamw"):
        train(model="mobilenetv3_small", data=colors, optimizer="lion")
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        train(model="mobilenetv3_small", data=colors, batch_size=0)
    with pytest.raises(ValueError, match="unknown model name 'mobilenet_v9'"):
        train(model="mobilenet_v9", data=colors, out=str(tmp_path / "o"), workers=0)
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a checkpoint written by fastzoo train"):
        train(data=colors, out=str(tmp_path / "o"), resume=str(tmp_path / "plain.pt"), **TINY)


def test_help_documents_undecodable_images(capsys):
    with pytest.raises(SystemExit):
        config.parse(["--help"])
    assert "cannot be decoded is skipped" in " ".join(capsys.readouterr().out.split())
