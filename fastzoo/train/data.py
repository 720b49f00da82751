"""ImageFolder data through torchvision (the optional dependency fastzoo[train]): checks with clear errors,
the anchors' augmentation, and samplers whose order and augmentation are a function of (seed, epoch, index),
so a resumed run sees exactly the batches an uninterrupted one would."""
import os
import warnings

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torch.utils.data._utils.collate import default_collate

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _tv():
    try:
        import torchvision
    except ImportError:
        raise ImportError("fastzoo train/eval read data with torchvision: pip install 'fastzoo[train]'") from None
    return torchvision


def split_dirs(root, splits=("train", "val")):
    """DIR/train and DIR/val, or a ValueError naming what is missing."""
    if not os.path.isdir(root):
        raise ValueError(f"data directory {root!r} does not exist")
    out = []
    for s in splits:
        d = os.path.join(root, s)
        if not os.path.isdir(d):
            raise ValueError(f"data directory {root!r} has no {s}/ folder (expected {d} with one folder per class)")
        out.append(d)
    return out


def image_folder(root):
    """torchvision ImageFolder over `root`, images decoded by safe_loader; an empty class folder or no class
    folder at all is a ValueError naming the folder."""
    tv = _tv()
    try:
        ds = tv.datasets.ImageFolder(root, loader=safe_loader, allow_empty=True)
    except FileNotFoundError as e:  # no class folders at all
        raise ValueError(f"{root}: {e}") from None
    counts = torch.bincount(torch.tensor(ds.targets, dtype=torch.long), minlength=len(ds.classes))
    empty = [os.path.join(root, c) for c, n in zip(ds.classes, counts.tolist()) if n == 0]
    if empty:
        raise ValueError(f"empty class folder(s), no image with an extension in {tv.datasets.folder.IMG_EXTENSIONS}: "
                         + ", ".join(empty))
    return ds


def safe_loader(path):
    """The image as RGB, or None with a warning naming the file when it cannot be decoded (skipped)."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError ...
        warnings.warn(f"fastzoo: skipping undecodable image {path} ({type(e).__name__}: {e})", stacklevel=2)
        return None


def train_transform(img_size, color_jitter=0.0):
    T = _tv().transforms
    ts = [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip()]
    if color_jitter > 0:
        ts.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    return T.Compose(ts + [T.ToTensor(), T.Normalize(MEAN, STD)])


def val_transform(img_size, crop_pct=0.875):
    T = _tv().transforms
    return T.Compose([T.Resize(int(round(img_size / crop_pct))), T.CenterCrop(img_size), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def sample_seed(seed, epoch, index):
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2 ** 63)


class Samples(torch.utils.data.Dataset):
    """(image, target, index) from an ImageFolder, transformed with the torch RNG seeded by (seed, epoch, index)
    (fork_rng keeps the process RNG, used by dropout, untouched). Items are (epoch, index) pairs or plain
    indices (epoch 0). An undecodable image gives None, dropped by collate."""

    def __init__(self, folder, transform, seed=0):
        self.folder, self.transform, self.seed = folder, transform, seed

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (0, item)
        path, target = self.folder.samples[index]
        img = self.folder.loader(path)
        if img is None:
            return Skipped(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            x = self.transform(img)
        return x, target, index


class Skipped(str):
    """The path of an image that could not be decoded, in place of a sample."""


def collate(batch):
    """(images, targets, indices, skipped paths); images/targets/indices are None when every image failed."""
    skipped = [b for b in batch if isinstance(b, Skipped)]
    good = [b for b in batch if not isinstance(b, Skipped)]
    x, y, idx = default_collate(good) if good else (None, None, None)
    return x, y, idx, [str(p) for p in skipped]


class EpochSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, this rank's share) yielding (epoch, index) pairs and
    starting `start` samples in, to skip the batches a resumed run already consumed."""

    def __init__(self, dataset, num_replicas, rank, seed):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch, start=0):
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self):
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Every rank-th index from `rank`, no padding: each sample is evaluated exactly once across the ranks."""

    def __init__(self, n, num_replicas=1, rank=0):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _worker_init(worker_id):
    # torchvision's transforms draw from torch (seeded per sample above); seed python/numpy too for user
    # transforms, from the per-worker seed DataLoader derives from its generator.
    import random
    import signal

    import numpy as np
    # Ctrl-C reaches the whole process group: the training process stops cleanly and shuts its workers
    # down; a worker dying on it first would turn the clean stop into "worker exited unexpectedly"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    s = torch.initial_seed() % 2 ** 32
    random.seed(s)
    np.random.seed(s)


def loader(dataset, sampler, batch_size, workers, drop_last=False, seed=0, pin_memory=False):
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=drop_last, pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
                      generator=g, persistent_workers=False)
