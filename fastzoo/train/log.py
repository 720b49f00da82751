"""Rank 0's outputs: the text log (OUT/train.log and the console), the progress bar (tqdm), TensorBoard
scalars. Other ranks get no-op versions, so the loop never asks who it is."""
import logging
import os
import sys


def logger(out, is_main, name="train"):
    log = logging.getLogger(f"fastzoo.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if is_main and out:
        handlers.append(logging.FileHandler(os.path.join(out, f"{name}.log")))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    return log


def close(log):
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def progress(is_main, total, desc):
    """tqdm bar on rank 0 when stderr is a terminal (disable=None), nothing elsewhere."""
    if not is_main:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)


class _NoWriter:
    def add_scalar(self, *a, **k):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def tensorboard(out, enabled):
    if not enabled:
        return _NoWriter()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or pip install 'fastzoo[train]')") from None
    return SummaryWriter(os.path.join(out, "tb"))
