"""New classification heads trained on cached features of a frozen backbone.

The head is chosen on training data only: a stratified part of the training split
(``val_fraction``) drives early stopping and the best epoch; the test split is scored once, at the end.
Every epoch writes a checkpoint, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "none")


@dataclass(frozen=True)
class HeadSpec:
    """``fcN``: one linear layer (VGG16's fc8 replaced); ``mlp:H1,H2``: Linear→ReLU→Dropout per hidden size."""

    name: str
    hidden: tuple[int, ...] = ()
    dropout: float = 0.5

    @classmethod
    def parse(cls, text: str, n_classes: int, dropout: float = 0.5) -> "HeadSpec":
        if text.startswith("fc"):
            count = text[2:]
            if count and (not count.isdigit() or int(count) != n_classes):
                raise UserError(f"--head {text}: the data has {n_classes} classes, so the head is fc{n_classes}")
            return cls(f"fc{n_classes}", (), dropout)
        if text.startswith("mlp:"):
            try:
                hidden = tuple(int(h) for h in text[4:].split(","))
            except ValueError:
                raise UserError(f"--head {text}: expected mlp:H1,H2,... with integer sizes") from None
            if not hidden or min(hidden) < 1:
                raise UserError(f"--head {text}: hidden sizes must be positive")
            return cls(text, hidden, dropout)
        raise UserError(f"unknown --head {text!r}: use fc{n_classes} (a new last layer) or mlp:1024,1024")

    def input_layer(self, backbone: str) -> str:
        """fcN sits where the backbone's own classifier did; the MLP head reads flattened pool5 (VGG16)."""
        if backbone == "vgg16":
            return "pool5" if self.hidden else "relu7"
        return "avgpool"

    def build(self, in_features: int, n_classes: int):
        from torch import nn

        layers: list[nn.Module] = []
        width = in_features
        for size in self.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(self.dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    batch_size: int = 64
    epochs: int = 30
    patience: int = 8  # epochs without a better validation accuracy before stopping
    val_fraction: float = 0.2
    seed: int = 0

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown --optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown --schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("--epochs, --batch-size and --lr must be positive")


@dataclass
class HeadResult:
    head: object  # the trained nn.Module, best epoch's weights
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]
    curves: dict[str, list[float]]
    epoch_seconds: float  # mean wall time of one training epoch
    resumed_at: int = 0
    stopped_early: bool = False


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    fit, val = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(fit), np.sort(val)


def _evaluate(head, x, y, batch: int = 1024) -> tuple[float, float, np.ndarray]:
    import torch
    from torch.nn import functional as F

    head.eval()
    with torch.inference_mode():
        logits = torch.cat([head(x[i : i + batch]) for i in range(0, len(x), batch)])
        loss = float(F.cross_entropy(logits, y))
        predictions = logits.argmax(1)
    return loss, float((predictions == y).float().mean()), predictions.numpy()


def _optimizer(head, config: TrainConfig):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def train_head(
    spec: HeadSpec,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    config: TrainConfig,
    checkpoint: Path,
    progress=None,
) -> HeadResult:
    """Train on cached features; resume from ``checkpoint`` when it exists (same run)."""
    import torch
    from torch.nn import functional as F

    from .classifiers import per_class_summary

    config.check()
    x_all = torch.as_tensor(train[0], dtype=torch.float32)
    y_all = torch.as_tensor(train[1], dtype=torch.long)
    fit, val = validation_split(train[1], config.val_fraction, config.seed)
    x_fit, y_fit, x_val, y_val = x_all[fit], y_all[fit], x_all[val], y_all[val]
    torch.manual_seed(config.seed)
    head = spec.build(x_all.shape[1], n_classes)
    optimizer = _optimizer(head, config)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs) if config.schedule == "cosine"
                 else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0))
    generator = torch.Generator().manual_seed(config.seed)
    curves: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [], "epoch_seconds": []}
    best = {"epoch": 0, "val_acc": -1.0, "state": None}
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        curves, best, start = state["curves"], state["best"], state["epoch"]
    stopped_early = False
    for epoch in range(start, config.epochs):
        if epoch - best["epoch"] >= config.patience and best["state"] is not None:
            stopped_early = True
            break
        begun = time.perf_counter()
        head.train()
        order = torch.randperm(len(y_fit), generator=generator)
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            loss = F.cross_entropy(head(x_fit[batch]), y_fit[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        seconds = time.perf_counter() - begun
        train_loss, train_acc, _ = _evaluate(head, x_fit, y_fit)
        val_loss, val_acc, _ = _evaluate(head, x_val, y_val)
        for name, value in zip(curves, (train_loss, train_acc, val_loss, val_acc, seconds)):
            curves[name].append(value)
        if val_acc > best["val_acc"]:
            best = {"epoch": epoch + 1, "val_acc": val_acc, "state": {k: v.clone() for k, v in head.state_dict().items()}}
        _save_checkpoint(checkpoint, {"head": head.state_dict(), "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                                      "curves": curves, "best": best, "epoch": epoch + 1, "config": asdict(config)})
        if progress is not None:
            progress(epoch + 1, curves)
    head.load_state_dict(best["state"])
    x_test = torch.as_tensor(test[0], dtype=torch.float32)
    y_test = torch.as_tensor(test[1], dtype=torch.long)
    _, test_acc, predictions = _evaluate(head, x_test, y_test)  # the test split's one use
    per_class, confusion = per_class_summary(test[1], predictions, n_classes)
    return HeadResult(head, best["epoch"], best["val_acc"], test_acc, per_class, confusion,
                      curves, float(np.mean(curves["epoch_seconds"])), start, stopped_early)
