"""The training loop: one process or DDP under torchrun, grad accumulation, AMP, checkpoints that resume
exactly (mid-epoch included), validation sharded over the ranks."""
import contextlib
import os
import random
import signal
import time

import numpy as np
import torch
import torch.nn as nn

import fastzoo

from . import checkpoint, config, data, distributed, log as logmod, optim
from .evaluate import evaluate_loader

# options that must match for --resume to continue the same run (others, e.g. --workers, may change)
RESUME_KEYS = ("model", "img_size", "epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov",
               "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "grad_accum", "seed", "amp")


def amp_dtype(amp, device):
    if amp is None:
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a GPU; on CPU use --amp bf16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop at the next optimizer step (and write last.pt); a second one
    interrupts at once."""

    def __init__(self):
        self.set, self.old = False, {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train(args):
    """Run the training described by `args` (see config.parser); returns a summary dict."""
    if args.tensorboard:  # fail on every rank, before any work, if the package is missing
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    train_dir, val_dir = data.split_dirs(args.data)
    train_folder, val_folder = data.image_folder(train_dir), data.image_folder(val_dir)
    if train_folder.classes != val_folder.classes:
        raise ValueError(f"{train_dir} and {val_dir} have different class folders: "
                         f"{train_folder.classes} vs {val_folder.classes}")
    d = distributed.setup(args.device)
    try:
        with StopFlag() as stop:
            return _train(args, d, train_folder, val_folder, stop)
    finally:
        distributed.teardown(d)


def _train(args, d, train_folder, val_folder, stop):
    out = args.out
    if d.is_main:
        os.makedirs(out, exist_ok=True)
    log = logmod.logger(out, d.is_main)
    try:
        return _loop(args, d, train_folder, val_folder, stop, log)
    finally:
        logmod.close(log)


def _loop(args, d, train_folder, val_folder, stop, log):
    dev, dtype = d.device, amp_dtype(args.amp, d.device)
    classes = train_folder.classes
    seed_everything(args.seed)  # the same model init on every rank
    model = fastzoo.create_model(args.model, num_classes=len(classes), weights=args.weights).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    seed_everything(args.seed + d.rank)  # then a dropout stream per rank

    train_ds = data.Samples(train_folder, data.train_transform(args.img_size, args.color_jitter), args.seed)
    val_ds = data.Samples(val_folder, data.val_transform(args.img_size, args.crop_pct))
    sampler = data.EpochSampler(train_ds, d.world_size, d.rank, args.seed)
    pin = dev.type == "cuda"
    train_loader = data.loader(train_ds, sampler, args.batch_size, args.workers, args.drop_last, args.seed + d.rank, pin)
    val_loader = data.loader(val_ds, data.ShardSampler(len(val_ds), d.world_size, d.rank), args.batch_size,
                             args.workers, pin_memory=pin)
    batches = len(train_loader)
    if batches == 0:
        raise ValueError(f"{sampler.num_samples} training images per process is fewer than --batch-size "
                         f"{args.batch_size} (with --drop-last): lower --batch-size or use --no-drop-last")
    spe = optim.steps_per_epoch(batches, args.grad_accum)
    opt = optim.optimizer(args, model)
    sched = optim.Schedule(args, opt, spe)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    net = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    cfg = config.to_dict(args)
    st = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_top1": -1.0}
    resumed_loss = [0.0, 0]
    if args.resume:
        ck = checkpoint.load(args.resume)
        if not {"optimizer", "ranks", "config"} <= set(ck):
            raise ValueError(f"{args.resume} is not a checkpoint written by fastzoo train (no optimizer/RNG state); "
                             f"to start from its weights use --weights")
        changed = {k: (ck["config"].get(k), cfg[k]) for k in RESUME_KEYS if ck["config"].get(k) != cfg[k]}
        if changed:
            log.warning(f"warning: --resume with options changed since the checkpoint (was, now): {changed}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        st = {k: ck[k] for k in st}
        if st["batch_in_epoch"] and (ck["world_size"] != d.world_size or ck["config"]["batch_size"] != args.batch_size):
            log.warning(f"warning: {args.resume} stopped inside epoch {st['epoch'] + 1} with another world size "
                        f"or batch size: that epoch restarts from its beginning")
            st["batch_in_epoch"] = 0
        mine = ck["ranks"][d.rank] if d.rank < len(ck["ranks"]) else ck["ranks"][0]
        checkpoint.set_rng_state(mine["rng"])
        resumed_loss = mine["epoch_loss"] if st["batch_in_epoch"] else [0.0, 0]
    if d.is_main:
        resolved = dict(cfg, world_size=d.world_size, device=str(dev), amp_dtype=str(dtype).replace("torch.", ""),
                        classes=classes, train_images=len(train_ds), val_images=len(val_ds),
                        steps_per_epoch=spe, fastzoo=fastzoo.__version__, torch=torch.__version__)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            f.write(config.dumps(resolved) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"fastzoo train {args.model} ({n_params / 1e6:.2f}M params) on {args.data}: {len(classes)} classes, "
             f"{len(train_ds)} train / {len(val_ds)} val images, {d.world_size} process(es) on {dev}, "
             f"batch {args.batch_size}x{d.world_size}x{args.grad_accum}, {spe} steps/epoch, amp {args.amp or 'off'}")
    if args.resume:
        log.info(f"resumed from {args.resume}: epoch {st['epoch'] + 1}, batch {st['batch_in_epoch']}, "
                 f"step {st['step']}, best top-1 " + (f"{st['best_top1']:.2f}" if st["best_top1"] >= 0 else "none yet"))
    tb = logmod.tensorboard(args.out, args.tensorboard and d.is_main)

    def save(path, epoch, batch_in_epoch, loss_sum=0.0, n_seen=0):
        # per-rank state (RNG, the unfinished epoch's loss sums) gathered to rank 0: a collective, all ranks call it
        ranks = distributed.gather_objects(d, {"rng": checkpoint.rng_state(), "epoch_loss": [loss_sum, n_seen]})
        if d.is_main:
            checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                             "batch_in_epoch": batch_in_epoch, "step": st["step"], "best_top1": st["best_top1"],
                             "ranks": ranks, "world_size": d.world_size, "classes": classes, "config": cfg,
                             "fastzoo": fastzoo.__version__}, path)

    last, best = os.path.join(args.out, "last.pt"), os.path.join(args.out, "best.pt")
    history, stopped, val = [], None, None
    accum = args.grad_accum
    for epoch in range(st["epoch"], args.epochs):
        b, carried = st["batch_in_epoch"], resumed_loss  # where a resumed run stopped in this epoch, else 0
        st["batch_in_epoch"], resumed_loss = 0, [0.0, 0]
        sampler.set_position(epoch, b * args.batch_size)
        net.train()
        bar = logmod.progress(d.is_main, batches, f"epoch {epoch + 1}/{args.epochs}")
        bar.update(b)
        loss_sum = torch.tensor(carried[0], dtype=torch.float64, device=dev)
        n_seen, t0, first = carried[1], time.time(), True
        for batch in train_loader:
            group = (b // accum) * accum
            group_size = min(accum, batches - group)  # the epoch's last group may be short
            closes_group = b + 1 - group == group_size
            x, y, idx, skipped = batch
            for path in skipped:  # also warned about (stderr) by the loader, on every rank
                log.warning(f"skipped undecodable image {path}")
            if x is None:  # every image of the batch undecodable
                if d.enabled:
                    raise RuntimeError("a whole training batch was undecodable; DDP cannot skip it on one rank")
            else:
                if first:
                    firsts = distributed.gather_objects(d, idx[:8].tolist())
                    log.info(f"epoch {epoch + 1} first batch ({b + 1}/{batches}) samples: "
                             + "; ".join(f"rank {r} {v}" for r, v in enumerate(firsts)))
                    first = False
                x = x.to(dev, non_blocking=True).to(memory_format=fmt)
                y = y.to(dev, non_blocking=True)
                sync = contextlib.nullcontext() if closes_group or not d.enabled else net.no_sync()
                with sync:
                    with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        loss = criterion(net(x), y)
                    scaler.scale(loss / group_size).backward()
                loss_sum += loss.detach().double() * y.numel()
                n_seen += y.numel()
            b += 1
            bar.update(1)
            if not closes_group:
                continue
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step_batch()
            st["step"] += 1
            if d.is_main and st["step"] % args.log_interval == 0 and x is not None:
                cur = loss.item()
                bar.set_postfix_str(f"loss {cur:.4f} lr {sched.lr:.4g}")
                log.info(f"epoch {epoch + 1} step {st['step']} batch {b}/{batches} loss {cur:.4f} lr {sched.lr:.4g}")
                tb.add_scalar("train/loss", cur, st["step"])
                tb.add_scalar("train/lr", sched.lr, st["step"])
            at_max = args.max_steps is not None and st["step"] >= args.max_steps
            if (at_max or distributed.any_rank(d, stop.set)) and b < batches:
                stopped = "max_steps" if at_max else "interrupted"
                break
        bar.close()
        if stopped:
            save(last, epoch, b, loss_sum.item(), n_seen)
            log.info(f"stopped ({'--max-steps' if stopped == 'max_steps' else 'Ctrl-C/SIGTERM'}) at epoch "
                     f"{epoch + 1} batch {b}/{batches} step {st['step']}: wrote {last}; continue with --resume {last}")
            break
        tl_sum, tl_n = distributed.all_reduce_sum(d, [loss_sum.item(), n_seen])
        train_loss = tl_sum / max(tl_n, 1)
        # validation in fp32 (no autocast), as `fastzoo eval` measures by default
        val = evaluate_loader(model, val_loader, d, criterion=criterion, memory_format=fmt)
        sched.step_epoch(val["top1"])
        st.update(epoch=epoch + 1, batch_in_epoch=0)
        is_best = val["top1"] > st["best_top1"]
        st["best_top1"] = max(st["best_top1"], val["top1"])
        save(last, epoch + 1, 0)
        if is_best:
            save(best, epoch + 1, 0)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, **val})
        log.info(f"epoch {epoch + 1}/{args.epochs} step {st['step']} train loss {train_loss:.4f} | val loss "
                 f"{val['loss']:.4f} top-1 {val['top1']:.2f} top-5 {val['top5']:.2f} ({val['n']} images) | "
                 f"lr {sched.lr:.4g} | {time.time() - t0:.1f}s{' | best' if is_best else ''}")
        for k, v in (("train/epoch_loss", train_loss), ("val/loss", val["loss"]), ("val/top1", val["top1"]),
                     ("val/top5", val["top5"])):
            tb.add_scalar(k, v, st["step"])  # one x axis for every scalar: the optimizer step
        tb.flush()
        if args.max_steps is not None and st["step"] >= args.max_steps:
            stopped = "max_steps"
        elif distributed.any_rank(d, stop.set):
            stopped = "interrupted"
        if stopped:
            log.info(f"stopped at the end of epoch {epoch + 1} (step {st['step']}); last.pt holds it")
            break
    tb.close()
    if not stopped:
        log.info(f"done: {st['epoch']} epochs, {st['step']} steps, best top-1 {st['best_top1']:.2f}; "
                 f"checkpoints {last}, {best}")
    return {"history": history, "val": val, "epoch": st["epoch"], "step": st["step"], "best_top1": st["best_top1"],
            "stopped": stopped, "last": last, "best": best, "rank": d.rank, "world_size": d.world_size}

