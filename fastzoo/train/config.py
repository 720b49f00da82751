"""The options of `fastzoo train`: one argparse parser, shared by the command line and the Python function."""
import argparse
import json

UNDECODABLE_NOTE = ("An image that cannot be decoded is skipped with a warning naming the file "
                    "(the batch shrinks by one); an empty class folder or a missing train/ or val/ is an error.")


def parser():
    p = argparse.ArgumentParser(
        prog="fastzoo train",
        description="Train a fastzoo model on an ImageFolder dataset (DIR/train/<class>/*, DIR/val/<class>/*) "
                    "through the fused operators. Plain python runs one process; launched by torchrun it runs "
                    "DistributedDataParallel (gloo on CPU, nccl on GPU). " + UNDECODABLE_NOTE,
        epilog="Example: torchrun --nproc_per_node=2 -m fastzoo train --model mobilenetv3_small --data DIR "
               "--epochs 90 --out runs/a. Files in --out: train.log, config.json, last.pt (every epoch, at "
               "--max-steps and on Ctrl-C/SIGTERM), best.pt (best val top-1), tb/ (with --tensorboard).")
    a = p.add_argument
    a("--model", required=True, help="a name from fastzoo.list_models() (torchvision/timm names work too)")
    a("--data", required=True, metavar="DIR", help="ImageFolder root with train/ and val/ inside")
    a("--img-size", type=int, default=224, help="training crop and validation crop size (default 224)")
    a("--epochs", type=int, default=90)
    a("--batch-size", type=int, default=32, help="per process (default 32)")
    a("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    a("--optimizer", choices=("sgd", "adamw"), default="sgd")
    a("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    a("--nesterov", action="store_true", help="Nesterov momentum for SGD")
    a("--weight-decay", type=float, default=1e-4, help="on conv/linear weights only, never on BN or biases")
    a("--schedule", choices=("cosine", "step", "plateau"), default="cosine",
      help="cosine and step change the lr every optimizer step, plateau after each validation")
    a("--warmup-epochs", type=float, default=0.0, help="linear warm-up from lr/100 (per step; default 0)")
    a("--lr-step-epochs", type=float, default=30.0, help="--schedule step: multiply by --lr-gamma every N epochs")
    a("--lr-gamma", type=float, default=0.1, help="factor of the step and plateau schedules (default 0.1)")
    a("--plateau-patience", type=int, default=5, help="--schedule plateau: epochs without a better top-1")
    a("--label-smoothing", type=float, default=0.0)
    a("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"), default=None,
      help="mixed precision: bf16 on CPU; fp16 (with a GradScaler, the default on GPU) or bf16 on GPU")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    a("--workers", type=int, default=4, help="DataLoader worker processes per rank (default 4; 0 = in process)")
    a("--channels-last", action="store_true", help="train in channels_last memory format")
    a("--color-jitter", type=float, default=0.0, help="ColorJitter brightness/contrast/saturation (default off)")
    a("--crop-pct", type=float, default=0.875, help="validation: resize to img-size/crop-pct, center crop")
    a("--seed", type=int, default=0, help="model init, data order and augmentation (default 0)")
    a("--weights", metavar="CKPT", help="start from these weights (fastzoo/torchvision/timm; same num_classes)")
    a("--out", metavar="DIR", default="runs/train", help="log, config and checkpoints (default runs/train)")
    a("--resume", metavar="CKPT", help="continue a run exactly from a checkpoint (e.g. OUT/last.pt)")
    a("--max-steps", type=int, default=None, help="stop after this many optimizer steps in all (writes last.pt)")
    a("--tensorboard", action="store_true", help="TensorBoard scalars in OUT/tb (needs the tensorboard package)")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--log-interval", type=int, default=50, help="log the training loss every N optimizer steps")
    a("--drop-last", action=argparse.BooleanOptionalAction, default=True,
      help="drop each epoch's last incomplete training batch (default on: BN needs more than one sample)")
    return p


def from_options(**options):
    """argparse Namespace from keyword options named like the flags (img_size=..., batch_size=...), with the
    command line's defaults; unknown keywords are a TypeError, like any Python function."""
    p = parser()
    known = {a.dest for a in p._actions if a.dest != "help"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"fastzoo.train.train: unknown option(s) {', '.join(unknown)}; "
                        f"see `fastzoo train --help`")
    missing = [k for k in ("model", "data") if options.get(k) is None]
    if missing:
        raise TypeError(f"fastzoo.train.train: missing required option(s) {', '.join(missing)}")
    args = p.parse_args(["--model", str(options["model"]), "--data", str(options["data"])])
    choices = {a.dest: a.choices for a in p._actions if a.choices}
    for k, v in options.items():
        if k in choices and v is not None and v not in choices[k]:
            raise ValueError(f"fastzoo.train.train: {k}={v!r} is not one of {', '.join(map(str, choices[k]))}")
        setattr(args, k, v)
    def value_error(msg):
        raise ValueError(f"fastzoo.train.train: {msg}")
    check(args, value_error)
    return args


def check(args, error):
    for name in ("img_size", "epochs", "batch_size", "grad_accum"):
        if getattr(args, name) < 1:
            error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.workers < 0:
        error("--workers must be 0 or more")
    if args.max_steps is not None and args.max_steps < 1:
        error("--max-steps must be at least 1")


def parse(argv):
    """Command-line options; argparse exits with status 2 and a usage message on a bad one."""
    p = parser()
    args = p.parse_args(argv)
    check(args, p.error)
    return args


def to_dict(args):
    return dict(vars(args))


def dumps(cfg):
    return json.dumps(cfg, indent=2, sort_keys=True, default=str)
