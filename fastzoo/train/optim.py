"""Optimizer (weight decay on conv/linear weights only, none on BN and biases) and the lr schedule from
torch.optim.lr_scheduler: warm-up (LinearLR) then cosine or step per optimizer step, or ReduceLROnPlateau
per validation."""
import math

import torch
from torch.optim import lr_scheduler as S


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            # 1-d tensors are BN/LayerNorm scales and shifts and biases: decaying them only hurts
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer(args, model):
    groups = param_groups(model, args.weight_decay)
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    return torch.optim.AdamW(groups, lr=args.lr)


class Schedule:
    """One object with step_batch() after each optimizer step and step_epoch(top1) after each validation,
    holding the torch schedulers it drives (state_dict/load_state_dict for checkpoints)."""

    def __init__(self, args, opt, steps_per_epoch):
        self.kind = args.schedule
        total = max(1, args.epochs * steps_per_epoch)
        self.warmup = min(int(round(args.warmup_epochs * steps_per_epoch)), total - 1)
        warm = [S.LinearLR(opt, start_factor=0.01, total_iters=self.warmup)] if self.warmup > 0 else []
        if self.kind == "cosine":
            main = S.CosineAnnealingLR(opt, T_max=total - self.warmup)
        elif self.kind == "step":
            main = S.StepLR(opt, step_size=max(1, int(round(args.lr_step_epochs * steps_per_epoch))),
                            gamma=args.lr_gamma)
        else:
            main = None
            self.plateau = S.ReduceLROnPlateau(opt, mode="max", factor=args.lr_gamma,
                                               patience=args.plateau_patience)
        if main is not None:
            self.per_step = S.SequentialLR(opt, warm + [main], milestones=[self.warmup]) if warm else main
        else:
            self.per_step = warm[0] if warm else None  # warm-up only; the plateau scheduler takes over
        self.opt, self.steps = opt, 0

    def step_batch(self):
        self.steps += 1
        if self.per_step is not None and (self.kind != "plateau" or self.steps <= self.warmup):
            self.per_step.step()

    def step_epoch(self, top1):
        if self.kind == "plateau" and self.steps >= self.warmup:
            self.plateau.step(top1)

    @property
    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def state_dict(self):
        sd = {"steps": self.steps}
        if self.per_step is not None:
            sd["per_step"] = self.per_step.state_dict()
        if self.kind == "plateau":
            sd["plateau"] = self.plateau.state_dict()
        return sd

    def load_state_dict(self, sd):
        self.steps = sd["steps"]
        if self.per_step is not None:
            self.per_step.load_state_dict(sd["per_step"])
        if self.kind == "plateau":
            self.plateau.load_state_dict(sd["plateau"])


def steps_per_epoch(batches, grad_accum):
    return math.ceil(batches / grad_accum)
