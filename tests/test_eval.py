"""fastzoo eval: center / ten-crop / multi-scale top-1 counted by hand on a model whose logits are the mean
colour of its input; the CLI on a training checkpoint and on a torchvision checkpoint; bad input."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from fastzoo import cli
from fastzoo.train import evaluate, train
from fastzoo.train.evaluate import accuracy_counts

from data_helpers import color_dataset, write_png

pytest.importorskip("torchvision")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R, G, B = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class MeanColour(nn.Module):
    """Logits of the classes (blue, green, red) = 100 x the mean of the B, G, R input channels: a crop votes
    (nearly one-hot after softmax) for the colour covering most of it."""

    def forward(self, x):
        return 100 * x.mean(dim=(2, 3)).flip(1)


def image(background, center=None, corners=None):
    """16x16: `center` fills the middle 8x8 ([4:12, 4:12]), `corners` the four corner 4x4 squares."""
    a = np.zeros((16, 16, 3), np.uint8) + np.array(background, np.uint8)
    if center:
        a[4:12, 4:12] = center
    if corners:
        for r in (slice(0, 4), slice(12, 16)):
            for c in (slice(0, 4), slice(12, 16)):
                a[r, c] = corners
    return a


@pytest.fixture(scope="module")
def crops_data(tmp_path_factory):
    """Five val images, crop 8 of 16 (crop_pct 0.5: center and ten-crop see the image at 16 px).
    Ten-crop = tl [0:8,0:8], tr, bl, br and center [4:12,4:12], each twice (flips keep the mean colour).

    image                             label  center crop  ten-crop votes (5 crops)  multi 16/32/48 votes (15)
    A1, A2 red, green middle           red    green  x     4 red 1 green -> red  v   12 red 3 green -> red  v
    Bg     all green                   green  green  v     green v                  green v
    C      red, blue 4x4 corners       blue   red    x     corners 16/64 blue: 5 red -> red x
                                                           at 32 and 48 the corner crops are all blue:
                                                           multi 5 red + 2x(4 blue 1 red) = 7 red 8 blue -> blue v
    D      green, red middle           red    red    v     4 green 1 red -> green x  green x

    center: Bg, D = 2/5 = 40 %; ten: A1, A2, Bg = 3/5 = 60 %; multi: A1, A2, Bg, C = 4/5 = 80 %.
    """
    root = tmp_path_factory.mktemp("crops")
    for label, name, a in (("red", "a1", image(R, center=G)), ("red", "a2", image(R, center=G)),
                           ("green", "bg", image(G)), ("blue", "c", image(R, corners=B)),
                           ("red", "d", image(G, center=R))):
        write_png(os.path.join(root, "val", label, f"{name}.png"), a)
    return str(root)


@pytest.mark.parametrize("crop,top1,crops", [("center", 40.0, 1), ("ten", 60.0, 10), ("multi", 80.0, 30)])
def test_center_ten_multi_counted_by_hand(crops_data, crop, top1, crops):
    r = evaluate(MeanColour(), crops_data, img_size=8, crop=crop, crop_pct=0.5,
                 scales=[16, 32, 48] if crop == "multi" else None, batch_size=2, workers=0)
    assert r["n"] == 5 and r["correct1"] == round(top1 * 5 / 100) and r["top1"] == pytest.approx(top1)
    assert r["top5"] == 100.0 and r["crops"] == crops  # 3 classes: top-5 holds every class


def test_top5_counted_by_hand():
    probs = torch.tensor([[.9, .05, .02, .01, .01, .01, 0.],   # target 0: top-1 and top-5
                          [.3, .2, .15, .14, .11, .1, .0],     # target 4: 5th -> top-5 only
                          [.3, .2, .15, .14, .11, .1, .0],     # target 5: 6th -> neither
                          [.1, .1, .1, .1, .1, .1, .4]])       # target 6: top-1
    assert accuracy_counts(probs, torch.tensor([0, 4, 5, 6])) == (2, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    data = color_dataset(tmp / "data", n_train=6, n_val=3)
    r = train(model="mobilenetv3_small", data=data, img_size=24, batch_size=6, epochs=1, workers=0,
              out=str(tmp / "run"))
    return data, str(tmp / "run"), r


def test_eval_cli_on_a_training_checkpoint_matches_its_validation(trained, capsys, tmp_path):
    data, run, r = trained
    rc = cli.main(["eval", "--model", "mobilenetv3_small", "--weights", os.path.join(run, "best.pt"), "--data", data,
                   "--img-size", "24", "--workers", "0", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "center crop (1 per image), 9 images: top-1" in out
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["n"] == 9 and res["top1"] == pytest.approx(r["history"][0]["top1"])
    for crop in ("ten", "multi"):
        assert cli.main(["eval", "--model", "mobilenet_v3_small", "--weights", os.path.join(run, "last.pt"),
                         "--data", data, "--img-size", "24", "--workers", "0", "--crop", crop]) == 0
    assert "multi crop (30 per image)" in capsys.readouterr().out
    bf16 = evaluate("mobilenetv3_small", data, weights=os.path.join(run, "best.pt"), img_size=24, workers=0,
                    amp="bf16")
    assert bf16["n"] == 9


def test_eval_loads_a_torchvision_checkpoint(trained, tmp_path):
    tv = pytest.importorskip("torchvision")
    data = trained[0]
    torch.manual_seed(0)
    m = tv.models.mobilenet_v3_small(num_classes=3).eval()
    torch.save(m.state_dict(), tmp_path / "tv.pth")
    r = evaluate("mobilenet_v3_small", data, weights=str(tmp_path / "tv.pth"), img_size=24, workers=0)
    ref = evaluate(m, data, img_size=24, workers=0)  # torchvision's own model on the same images
    assert r["n"] == 9 and r["correct1"] == ref["correct1"]


def test_eval_under_torchrun_shards_the_images(trained):
    data, run, r = trained
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastzoo",
           "eval", "--model", "mobilenetv3_small", "--weights", os.path.join(run, "best.pt"), "--data", data,
           "--img-size", "24", "--workers", "0"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("fastzoo eval")]
    assert len(lines) == 1  # rank 0 prints
    top1 = float(re.search(r"9 images: top-1 ([\d.]+)", lines[0]).group(1))
    assert top1 == pytest.approx(r["history"][0]["top1"], abs=0.01)


def test_eval_bad_input(trained, tmp_path, capsys):
    data, run, _ = trained
    base = ["eval", "--model", "mobilenetv3_small", "--weights", os.path.join(run, "best.pt")]
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--data", data, "--scales", "24,32"])
    assert e.value.code == 2 and "--scales applies to --crop multi only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--data", data, "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path / "nowhere")]) == 1
    assert "nowhere' does not exist" in capsys.readouterr().err
    assert cli.main(base + ["--data", data, "--crop", "multi", "--scales", "16", "--img-size", "24"]) == 1
    assert "smaller than the crop size 24" in capsys.readouterr().err
    other = ["eval", "--model", "resnet18"] + base[3:]  # weights of another model
    assert cli.main(other + ["--data", data, "--workers", "0"]) == 1
    assert "does not fit ResNet" in capsys.readouterr().err
    # an undecodable val image: skipped with a warning naming it, not counted
    bad = os.path.join(data, "val", "red", "zz_broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 truncated")
    try:
        with pytest.warns(UserWarning, match="zz_broken.jpg"):
            r = evaluate("mobilenetv3_small", data, weights=os.path.join(run, "best.pt"), img_size=24, workers=0)
        assert r["n"] == 9
    finally:
        os.remove(bad)
