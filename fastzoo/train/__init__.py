"""`fastzoo train` and `fastzoo eval`: ImageFolder training through the fused operators, one process or
DistributedDataParallel under torchrun, with checkpoints that resume exactly, and multi-crop evaluation.

    from fastzoo.train import train, evaluate
    train(model="mobilenetv3_small", data="DIR", epochs=10, batch_size=64, out="runs/a")
    evaluate("mobilenetv3_small", "DIR", weights="runs/a/best.pt", crop="ten")   # {"top1", "top5", "n", ...}
"""
import sys

from . import config
from .evaluate import evaluate

__all__ = ["train", "evaluate", "main"]


def train(**options):
    """Train with the options of `fastzoo train`, as keywords (model=, data=, img_size=, batch_size=, ...).
    Returns {"history": [per-epoch train loss and val top-1/top-5], "val", "epoch", "step", "best_top1",
    "stopped" (None, "max_steps" or "interrupted"), "last", "best"}."""
    from .engine import train as run
    return run(config.from_options(**options))


def main(argv=None):
    """fastzoo train [options]: 0 when done, 1 on a data/checkpoint error, 2 on a bad option, 130 when
    stopped by Ctrl-C/SIGTERM (after writing last.pt)."""
    args = config.parse(argv)
    from .engine import train as run
    try:
        res = run(args)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        print(f"fastzoo train: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    return 130 if res["stopped"] == "interrupted" else 0
