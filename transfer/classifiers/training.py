"""The training loop shared by heads on cached features, end-to-end fine-tuning and the from-scratch
ladder: settings, the stratified validation part, epochs with a validation-chosen best state and early
stopping, checkpoints that resume a killed run (loaded without running code), and the test split scored
once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transfer.core.choices import Optimizer, Schedule
from transfer.core.config import as_plain, choice, require
from transfer.core.console import console, warn
from transfer.core.errors import UserError

if TYPE_CHECKING:
    import torch
from transfer.classifiers.metrics import correctness, per_class_summary
from transfer.core.files import atomic_path, move_aside


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    optimizer: Optimizer = Optimizer.SGD
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = Schedule.COSINE
    batch_size: int = 64
    epochs: int = 30
    patience: int = 8  # epochs without a better validation accuracy before stopping
    val_fraction: float = 0.2
    seed: int = 0
    lr_decay: float = 0.95  # per-epoch factor of the exp schedule

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", choice(Optimizer, self.optimizer, "optimizer"))
        object.__setattr__(self, "schedule", choice(Schedule, self.schedule, "schedule"))
        require(0 < self.val_fraction < 1, "val_fraction", f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        for name in ("lr", "epochs", "batch_size", "patience", "lr_decay"):
            require(getattr(self, name) > 0, name, f"{name} must be positive, got {getattr(self, name)}")
        for name in ("momentum", "weight_decay"):
            require(getattr(self, name) >= 0, name, f"{name} must be 0 or more, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """From a stored row's settings; a setting added since the row was written takes its default."""
        return cls(**{setting.name: data[setting.name] for setting in fields(cls) if setting.name in data})


@dataclass(frozen=True, kw_only=True)
class Compute:
    """Where a network trains and in which precision: resolved (never "auto"), so it can be stored."""

    device: str = "cpu"
    precision: str = "fp32"

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto") -> Compute:
        """``auto``: CUDA when there is one; bf16 where the hardware computes it natively."""
        from transfer.core.device import resolve_device, resolve_precision

        resolved = resolve_device(device)
        return cls(device=resolved, precision=resolve_precision(precision, resolved))

    def autocast(self):
        """bf16 matrix products and convolutions (weights, gradients and optimiser state stay fp32)."""
        import torch

        return torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.precision == "bf16")


@dataclass
class TrainingResult:
    head: torch.nn.Module  # best epoch's weights
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]
    curves: dict[str, list[float]]
    epoch_seconds: float  # mean wall time of one training epoch
    resumed_at: int = 0
    stopped_early: bool = False
    test_correct: str = ""  # the test images right ("1") or wrong ("0"), in order; "" when not scored


def check_validation_split(labels: np.ndarray, fraction: float) -> None:
    """A stratified validation part needs two classes, and one image of every class on each side."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise UserError(f"the training split has {len(counts)} class(es): a classifier needs at least two")
    total, classes = len(labels), len(counts)
    held_out = int(np.ceil(fraction * total))  # as scikit-learn's train_test_split rounds it
    if counts.min() >= 2 and classes <= held_out <= total - classes:
        return
    if counts.min() < 2:
        raise UserError(f"the smallest class has {counts.min()} training image(s): the validation part needs one "
                        f"image of every class and training at least one more, so every class needs 2 or more "
                        f"training images (--train-per-class)")
    lowest, highest = classes / total, (total - classes) / total
    raise UserError(f"--val-fraction {fraction:g} holds out {held_out} of {total} training images, but the "
                    f"validation part needs at least one image of each of the {classes} classes and the fit part "
                    f"one more of each: use a --val-fraction between {lowest:.2f} and {highest:.2f}")


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    check_validation_split(labels, fraction)
    indices = np.arange(len(labels))
    fit, val = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(fit), np.sort(val)


@dataclass
class Scores:
    loss: float
    accuracy: float
    top5: float
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None

    @classmethod
    def of(cls, logits, labels) -> Scores:
        """Scores of float logits against labels; images labelled -1 (unreadable) are left out."""
        from torch.nn import functional as F

        known = labels >= 0
        logits, labels = logits[known], labels[known]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        predictions = top[:, 0]
        return cls(float(F.cross_entropy(logits, labels)), float((predictions == labels).float().mean()),
                   float((top == labels[:, None]).any(1).float().mean()), predictions.numpy(), labels.numpy())


class RunningScores:
    """Loss, top-1 and top-5 of an epoch's training batches as they are fitted (train mode: dropout,
    augmentation, weights moving), summed on the device: no second pass over the fit images and no
    synchronisation per batch."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None  # loss, correct, top-5 correct, images

    def add(self, logits, labels, loss) -> None:
        import torch

        known = labels >= 0  # a label of -1 (unreadable image) matches no class: only the count needs it
        top = logits.detach().topk(min(5, logits.shape[1]), dim=1).indices
        count = known.sum()
        batch = torch.stack([loss.detach().double() * count, (top[:, 0] == labels).sum().double(),
                             (top == labels[:, None]).any(1).sum().double(), count.double()])
        self.sums = batch if self.sums is None else self.sums + batch

    def scores(self) -> Scores:
        loss, correct, top5, seen = (self.sums.tolist() if self.sums is not None else [0.0] * 4)
        seen = max(seen, 1)
        return Scores(loss / seen, correct / seen, top5 / seen)


def _optimizer(param_groups: list[dict], config: TrainConfig):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _trainable_state(model) -> dict:
    """Trainable parameters and all buffers: what a checkpoint must restore (frozen weights are rebuilt)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable | buffers}


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    with atomic_path(path) as partial:
        torch.save(state, partial)


def _rng_states() -> dict:
    """The global generators that dropout and augmentation draw from: a resumed run continues them."""
    import torch

    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _discard_checkpoint(path: Path, error: Exception) -> None:
    aside = move_aside(path)
    reason = (str(error).strip().splitlines() or [""])[0][:100]
    warn(f"checkpoint {path} could not be read back as a checkpoint of this training ({type(error).__name__}: "
         f"{reason}); moved to {aside.name}, training starts afresh")


def _read_checkpoint(path: Path) -> dict | None:
    """A checkpoint's state, loaded without running code (``weights_only``); None when there is none.
    A file that is damaged or not a checkpoint is moved aside."""
    import zipfile

    import torch

    if not path.exists():
        return None
    try:
        # torch.load does not check the CRC-32 that torch.save writes for every member; zipfile does.
        damaged_member = zipfile.ZipFile(path).testzip()
        if damaged_member is not None:
            raise zipfile.BadZipFile(f"bad CRC-32 for {damaged_member}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"expected a dict, found {type(state).__name__}")
        return state
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError/EOFError for damage
        _discard_checkpoint(path, error)
        return None


# A checkpoint at most this often, and when training ends or is interrupted between epochs: a killed run
# loses at most this much work, and a large head is not slowed by writing its state every epoch
# (docs/measured-notes.md).
CHECKPOINT_SECONDS = 60.0


def epoch_lines(label: str) -> Callable[[int, dict], None]:
    """The line each finished epoch prints, the same in every command and inside `transfer run`."""

    def show(epoch: int, curves: dict) -> None:
        console.print(f"{label}: epoch {epoch}: train {100 * curves['train_acc'][-1]:.1f}%, "
                      f"val {100 * curves['val_acc'][-1]:.1f}% ({curves['epoch_seconds'][-1]:.1f} s)")

    return show


@dataclass
class TrainingTask:
    """One training problem for the shared loop: the model, its parameter groups, one epoch, evaluation."""

    model: torch.nn.Module  # its trainable state is what gets checkpointed
    param_groups: list[dict]
    fit_epoch: Callable  # (optimizer, torch.Generator) -> the epoch's running Scores (`RunningScores`)
    evaluate: Callable  # split name ("val", "test") -> Scores


def train(task: TrainingTask, n_classes: int, config: TrainConfig, checkpoint: Path, progress=None,
          score_test: bool = True) -> TrainingResult:
    """Epochs with validation-chosen best state and early stopping; resumes from ``checkpoint``.
    ``score_test=False`` leaves the test split untouched (a candidate that may not be chosen)."""
    import torch


    optimizer = _optimizer(task.param_groups, config)
    schedules = {"cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs),
                 "exp": lambda: torch.optim.lr_scheduler.ExponentialLR(optimizer, config.lr_decay),
                 "none": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)}
    scheduler = schedules[config.schedule]()
    generator = torch.Generator().manual_seed(config.seed)
    curves: dict[str, list] = {name: [] for name in ("train_loss", "train_acc", "train_top5", "val_loss", "val_acc",
                                                     "val_top5", "epoch_seconds")}
    best: dict[str, Any] = {"epoch": 0, "val_acc": -1.0, "state": None}  # a dict: checkpoints hold it so
    start = 0
    state = _read_checkpoint(checkpoint)
    if state is not None:
        initial = _trainable_state(task.model)  # to undo a partial restore (only when there is one to do)
        try:
            curves, best, start = state["curves"], state["best"], state["epoch"]
            task.model.load_state_dict(state["model"], strict=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            _set_rng_states(state["rng"])  # last: a failure above leaves the global generators untouched
        except (KeyError, TypeError, ValueError, RuntimeError) as error:  # readable, but not this training's
            _discard_checkpoint(checkpoint, error)
            task.model.load_state_dict(initial, strict=False)
            return train(task, n_classes, config, checkpoint, progress, score_test)
    def save(epochs_done: int) -> None:
        _save_checkpoint(checkpoint, {"model": _trainable_state(task.model), "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                                      "rng": _rng_states(), "curves": curves, "best": best, "epoch": epochs_done,
                                      "config": as_plain(config)})

    stopped_early = False
    saved_at, saved_epochs = time.perf_counter(), start
    for epoch in range(start, config.epochs):
        if epoch - best["epoch"] >= config.patience and best["state"] is not None:
            stopped_early = True
            break
        begun = time.perf_counter()
        fit = task.fit_epoch(optimizer, generator)
        scheduler.step()
        val = task.evaluate("val")
        if val.accuracy > best["val_acc"]:
            best = {"epoch": epoch + 1, "val_acc": val.accuracy, "state": _trainable_state(task.model)}
        seconds = time.perf_counter() - begun  # the whole epoch: training and both evaluations
        for name, value in zip(curves, (fit.loss, fit.accuracy, fit.top5, val.loss, val.accuracy, val.top5, seconds)):
            curves[name].append(value)
        if time.perf_counter() - saved_at >= CHECKPOINT_SECONDS:
            save(epoch + 1)
            saved_at, saved_epochs = time.perf_counter(), epoch + 1
        if progress is not None:
            try:
                progress(epoch + 1, curves)
            except KeyboardInterrupt:  # between epochs the state is whole: keep it
                save(epoch + 1)
                raise
    if saved_epochs != len(curves["epoch_seconds"]):  # the finished state, for a rerun (or the winner's test)
        save(len(curves["epoch_seconds"]))
    task.model.load_state_dict(best["state"], strict=False)
    if not score_test:
        return TrainingResult(task.model, best["epoch"], best["val_acc"], float("nan"), [], [], curves,
                              float(np.mean(curves["epoch_seconds"])), start, stopped_early)
    test = task.evaluate("test")  # the test split's one use
    per_class, confusion = per_class_summary(test.labels, test.predictions, n_classes)
    return TrainingResult(task.model, best["epoch"], best["val_acc"], test.accuracy, per_class, confusion,
                          curves, float(np.mean(curves["epoch_seconds"])), start, stopped_early,
                          correctness(test.labels, test.predictions))


