"""`fastzoo eval`: top-1 / top-5 of a checkpoint on an ImageFolder, with center, ten-crop (four corners and
the center, and their horizontal flips) or multi-scale ten-crop, softmax averaged over the crops; sharded
over the ranks under torchrun. Also the validation step of `fastzoo train`."""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

import fastzoo

from . import data, distributed


def crop_transform(img_size, crop="center", crop_pct=0.875, scales=None):
    """PIL image -> (3, S, S) for center, (10, 3, S, S) for ten, (10 * len(scales), 3, S, S) for multi;
    `scales` are the shorter-side sizes the image is resized to before each ten-crop."""
    T = data._tv().transforms
    norm = T.Compose([T.ToTensor(), T.Normalize(data.MEAN, data.STD)])
    resize = int(round(img_size / crop_pct))
    if crop == "center":
        return T.Compose([T.Resize(resize), T.CenterCrop(img_size), norm])
    if crop == "ten":
        scales = [resize]
    elif crop != "multi":
        raise ValueError(f"unknown crop {crop!r}: expected center, ten or multi")
    scales = list(scales or default_scales(img_size, crop_pct))
    small = [s for s in scales if s < img_size]
    if small:
        raise ValueError(f"scales {small} are smaller than the crop size {img_size}")
    tens = [T.Compose([T.Resize(s), T.TenCrop(img_size)]) for s in scales]
    return lambda img: torch.stack([norm(c) for t in tens for c in t(img)])


def default_scales(img_size, crop_pct=0.875):
    """Three shorter-side sizes around the center crop's: 224 -> 224, 256, 320."""
    r = int(round(img_size / crop_pct))
    return sorted({img_size, r, int(round(r * 1.25))})


def accuracy_counts(probs, target, k=5):
    """Correct top-1 and top-k counts (k is at most the number of classes)."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    hit = top == target[:, None]
    return hit[:, 0].sum().item(), hit.any(dim=1).sum().item()


@torch.no_grad()
def evaluate_loader(model, loader, d=None, criterion=None, dtype=None, memory_format=torch.contiguous_format):
    """Evaluate `model` (eval mode: fused operators) on batches of (x, y, index); x of shape (B, C, H, W) or
    (B, crops, C, H, W), softmax averaged over crops. Counts are summed over the ranks (d) before dividing.
    `dtype`: the input is cast to it (the model must already be in it: the fused ops take one dtype whole,
    not autocast's mixture)."""
    d = d or distributed.Dist()
    was_training = model.training
    model.eval()
    dev = d.device
    correct1 = correct5 = n = 0
    loss_sum = 0.0
    for x, y, _, _ in loader:
        if x is None:  # every image of the batch undecodable (each was warned about)
            continue
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        crops = x.shape[1] if x.dim() == 5 else 1
        x = x.flatten(0, 1) if x.dim() == 5 else x
        x = x.to(dtype) if dtype is not None else x
        logits = model(x.contiguous(memory_format=memory_format)).float()
        probs = logits.softmax(dim=1).view(y.shape[0], crops, -1).mean(dim=1)
        if criterion is not None:
            loss_sum += (criterion(logits, y) * y.numel()).item() if crops == 1 else \
                F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").item()
        c1, c5 = accuracy_counts(probs, y)
        correct1, correct5, n = correct1 + c1, correct5 + c5, n + y.numel()
    model.train(was_training)
    correct1, correct5, n, loss_sum = distributed.all_reduce_sum(d, [correct1, correct5, n, loss_sum])
    n = int(n)
    return {"top1": 100.0 * correct1 / max(n, 1), "top5": 100.0 * correct5 / max(n, 1), "loss": loss_sum / max(n, 1),
            "n": n, "correct1": int(correct1), "correct5": int(correct5)}


def eval_dir(root, split="val"):
    sub = os.path.join(root, split)
    if not os.path.isdir(root):
        raise ValueError(f"data directory {root!r} does not exist")
    return sub if os.path.isdir(sub) else root


def evaluate(model, data_dir, weights=None, img_size=224, crop="center", scales=None, crop_pct=0.875,
             batch_size=32, workers=4, device="auto", amp=None, num_classes=None, split="val", channels_last=False):
    """Top-1/top-5 (percent) of `model` (a fastzoo/torchvision/timm name, or an nn.Module) on the ImageFolder
    DATA/<split> (or DATA itself when it has no such folder). Returns {"top1", "top5", "n", "correct1",
    "correct5", "loss", "crops"}. Under torchrun the images are sharded over the ranks and the counts summed."""
    from .engine import amp_dtype
    if scales is not None and crop != "multi":
        raise ValueError("scales apply to crop='multi' only")
    folder = data.image_folder(eval_dir(data_dir, split))
    d = distributed.setup(device)
    try:
        if isinstance(model, str):
            model = fastzoo.create_model(model, num_classes=num_classes or len(folder.classes), weights=weights)
        elif weights is not None:
            fastzoo.models.load_weights(model, weights)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        dtype = amp_dtype(amp, d.device)  # --amp at inference: the whole model in bf16/fp16
        model = model.to(d.device, dtype=dtype, memory_format=fmt).eval()
        tf = crop_transform(img_size, crop, crop_pct, scales)
        ds = data.Samples(folder, tf)
        loader = data.loader(ds, data.ShardSampler(len(ds), d.world_size, d.rank), batch_size, workers,
                             pin_memory=d.device.type == "cuda")
        res = evaluate_loader(model, loader, d, dtype=dtype, memory_format=fmt)
        res["crops"] = {"center": 1, "ten": 10}.get(crop) or 10 * len(scales or default_scales(img_size, crop_pct))
        res["world_size"] = d.world_size
        return res
    finally:
        distributed.teardown(d)


def parser():
    p = argparse.ArgumentParser(
        prog="fastzoo eval",
        description="Top-1 and top-5 of a checkpoint on an ImageFolder (DIR/val/<class>/*, or DIR/<class>/*): "
                    "center crop, ten-crop (corners + center and their flips) or multi-scale ten-crop, softmax "
                    "averaged over the crops. Loads fastzoo, torchvision or timm checkpoints. Under torchrun the "
                    "images are sharded over the ranks. " + "An image that cannot be decoded is skipped with a "
                    "warning naming the file.")
    a = p.add_argument
    a("--model", required=True, help="a name from fastzoo.list_models() (torchvision/timm names work too)")
    a("--weights", required=True, metavar="CKPT", help="fastzoo (last.pt/best.pt), torchvision or timm weights")
    a("--data", required=True, metavar="DIR")
    a("--split", default="val", help="subfolder of DIR to evaluate when it exists (default val)")
    a("--img-size", type=int, default=224, help="crop size (default 224)")
    a("--crop", choices=("center", "ten", "multi"), default="center")
    a("--crop-pct", type=float, default=0.875, help="center/ten: resize the shorter side to img-size/crop-pct")
    a("--scales", type=lambda s: [int(v) for v in s.replace(",", " ").split()], default=None,
      help="multi: shorter-side sizes, e.g. 224,256,320 (default: img-size, img-size/crop-pct, 1.25x that)")
    a("--num-classes", type=int, default=None, help="default: the number of class folders")
    a("--batch-size", type=int, default=32)
    a("--workers", type=int, default=4)
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"), default=None,
      help="run the model in bf16 (CPU default) or fp16 (GPU default)")
    a("--channels-last", action="store_true")
    a("--json", metavar="FILE", help="also write the result as JSON")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.scales is not None and args.crop != "multi":
        p.error("--scales applies to --crop multi only")
    try:
        res = evaluate(args.model, args.data, weights=args.weights, img_size=args.img_size, crop=args.crop,
                       scales=args.scales, crop_pct=args.crop_pct, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, amp=args.amp, num_classes=args.num_classes, split=args.split,
                       channels_last=args.channels_last)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        print(f"fastzoo eval: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"fastzoo eval {args.model} {args.weights} on {eval_dir(args.data, args.split)}: {args.crop} crop "
              f"({res['crops']} per image), {res['n']} images: top-1 {res['top1']:.2f} top-5 {res['top5']:.2f}")
        if args.json:
            import json
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
    return 0
