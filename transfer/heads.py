"""New classification heads trained on cached features of a frozen backbone.

The head is chosen on training data only: a stratified part of the training split
(``val_fraction``) drives early stopping and the best epoch; the test split is scored once, at the end.
Every epoch writes a checkpoint, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .console import warn
from .errors import UserError
from .files import atomic_path, move_aside

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "exp", "none")  # exp: lr × lr_decay after every epoch


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
        """The layer whose features the head reads (the backbone's registry entry says which)."""
        from .backbones import get_backbone

        spec = get_backbone(backbone)
        return spec.mlp_head_input if self.hidden else spec.fc_head_input

    def replaced_module(self, backbone: str) -> str:
        """The module of the backbone that the head replaces when it is trained end to end."""
        from .backbones import get_backbone

        spec = get_backbone(backbone)
        return spec.mlp_head_module if self.hidden else spec.fc_head_module

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
    lr_decay: float = 0.95  # per-epoch factor of the exp schedule

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
    top5: float | None  # None when not measured (running averages of an augmented epoch)
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None

    @classmethod
    def of(cls, logits, labels) -> "Scores":
        """Scores of float logits against labels; images labelled -1 (unreadable) are left out."""
        from torch.nn import functional as F

        known = labels >= 0
        logits, labels = logits[known], labels[known]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        predictions = top[:, 0]
        return cls(float(F.cross_entropy(logits, labels)), float((predictions == labels).float().mean()),
                   float((top == labels[:, None]).any(1).float().mean()), predictions.numpy(), labels.numpy())


def _tensor_evaluator(head, splits: dict, batch: int = 1024):
    """evaluate(split) over in-memory features."""
    import torch

    def evaluate(split: str) -> Scores:
        x, y = splits[split]
        head.eval()
        with torch.inference_mode():
            return Scores.of(torch.cat([head(x[i : i + batch]) for i in range(0, len(x), batch)]), y)

    return evaluate


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

    states = {"torch": torch.get_rng_state()}
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


@dataclass
class TrainingTask:
    """One training problem for the shared loop: the model, its parameter groups, one epoch, evaluation."""

    model: object  # nn.Module; its trainable state is what gets checkpointed
    param_groups: list[dict]
    fit_epoch: Callable  # (optimizer, torch.Generator) -> None, or the epoch's running Scores
    evaluate: Callable  # split name ("fit", "val", "test") -> Scores


def train(task: TrainingTask, n_classes: int, config: TrainConfig, checkpoint: Path, progress=None,
          score_test: bool = True) -> HeadResult:
    """Epochs with validation-chosen best state and early stopping; resumes from ``checkpoint``.
    ``score_test=False`` leaves the test split untouched (a candidate that may not be chosen)."""
    import torch

    from .classifiers import per_class_summary

    optimizer = _optimizer(task.param_groups, config)
    schedules = {"cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs),
                 "exp": lambda: torch.optim.lr_scheduler.ExponentialLR(optimizer, config.lr_decay),
                 "none": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)}
    scheduler = schedules[config.schedule]()
    generator = torch.Generator().manual_seed(config.seed)
    curves: dict[str, list] = {name: [] for name in ("train_loss", "train_acc", "train_top5", "val_loss", "val_acc",
                                                     "val_top5", "epoch_seconds")}
    best = {"epoch": 0, "val_acc": -1.0, "state": None}
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
    stopped_early = False
    for epoch in range(start, config.epochs):
        if epoch - best["epoch"] >= config.patience and best["state"] is not None:
            stopped_early = True
            break
        begun = time.perf_counter()
        running = task.fit_epoch(optimizer, generator)  # end-to-end runs report running metrics
        scheduler.step()
        seconds = time.perf_counter() - begun
        fit = running if running is not None else task.evaluate("fit")
        val = task.evaluate("val")
        for name, value in zip(curves, (fit.loss, fit.accuracy, fit.top5, val.loss, val.accuracy, val.top5, seconds)):
            curves[name].append(value)
        if val.accuracy > best["val_acc"]:
            best = {"epoch": epoch + 1, "val_acc": val.accuracy, "state": _trainable_state(task.model)}
        _save_checkpoint(checkpoint, {"model": _trainable_state(task.model), "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                                      "rng": _rng_states(), "curves": curves, "best": best, "epoch": epoch + 1,
                                      "config": asdict(config)})
        if progress is not None:
            progress(epoch + 1, curves)
    task.model.load_state_dict(best["state"], strict=False)
    if not score_test:
        return HeadResult(task.model, best["epoch"], best["val_acc"], float("nan"), [], [], curves,
                          float(np.mean(curves["epoch_seconds"])), start, stopped_early)
    test = task.evaluate("test")  # the test split's one use
    per_class, confusion = per_class_summary(test.labels, test.predictions, n_classes)
    return HeadResult(task.model, best["epoch"], best["val_acc"], test.accuracy, per_class, confusion,
                      curves, float(np.mean(curves["epoch_seconds"])), start, stopped_early)


def train_head(
    spec: HeadSpec,
    train_data: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    config: TrainConfig,
    checkpoint: Path,
    progress=None,
    score_test: bool = True,
) -> HeadResult:
    """A head on cached features: no image goes through the network during the epochs."""
    import torch
    from torch.nn import functional as F

    config.check()
    x_all = torch.as_tensor(train_data[0], dtype=torch.float32)
    y_all = torch.as_tensor(train_data[1], dtype=torch.long)
    fit, val = validation_split(train_data[1], config.val_fraction, config.seed)
    splits = {"fit": (x_all[fit], y_all[fit]), "val": (x_all[val], y_all[val]),
              "test": (torch.as_tensor(test[0], dtype=torch.float32), torch.as_tensor(test[1], dtype=torch.long))}
    torch.manual_seed(config.seed)
    head = spec.build(x_all.shape[1], n_classes)
    x_fit, y_fit = splits["fit"]

    def fit_epoch(optimizer, generator) -> None:
        head.train()
        order = torch.randperm(len(y_fit), generator=generator)
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            loss = F.cross_entropy(head(x_fit[batch]), y_fit[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    task = TrainingTask(head, [{"params": list(head.parameters())}], fit_epoch, _tensor_evaluator(head, splits))
    return train(task, n_classes, config, checkpoint, progress, score_test)


# ------------------------------------------------------------------ end to end, from images

def attach_head(model, backbone: str, spec: HeadSpec, n_classes: int):
    """Put the new head where the backbone's classifier (or its last layer) was; return it. Its input
    width is that of the first linear layer of the module it replaces."""
    from torch import nn

    path = spec.replaced_module(backbone)
    replaced = model.get_submodule(path)
    width = next(m for m in replaced.modules() if isinstance(m, nn.Linear)).in_features
    parent_path, _, name = path.rpartition(".")
    head = spec.build(width, n_classes)
    setattr(model.get_submodule(parent_path) if parent_path else model, name, head)
    return head


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def unfreeze_prefixes(backbone: str, groups: str) -> tuple[str, ...]:
    """Prefixes of the parameters that ``--unfreeze groups`` trains besides the head ("": all)."""
    from .backbones import get_backbone

    available = get_backbone(backbone).unfreeze_groups
    if groups not in available:
        raise UserError(f"--unfreeze {groups!r} is not available for {backbone}; choose one of: {', '.join(available)}")
    return available[groups]


def unfreeze(model, head, backbone: str, groups: str) -> list[str]:
    """Freeze everything but the head and the named groups; returns the trainable parameter names."""
    prefixes = unfreeze_prefixes(backbone, groups)
    head_ids = {id(p) for p in head.parameters()}
    names = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = id(parameter) in head_ids or _matches(name, prefixes)
        if parameter.requires_grad:
            names.append(name)
    return names


class _LabelledImages:
    """(image tensor, label); an unreadable image gets label -1, which the loss and accuracy ignore."""

    def __init__(self, paths: list[Path], labels: list[int], transform, color: bool, size: int) -> None:
        self.paths, self.labels, self.transform, self.color, self.size = paths, labels, transform, color, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        from .images import UnreadableImage, read_image

        try:
            return self.transform(read_image(self.paths[index], self.color)), self.labels[index]
        except UnreadableImage:
            return torch.zeros(3, self.size, self.size), -1


@dataclass(frozen=True)
class EndToEnd:
    """What an end-to-end run needs besides the head and the training settings."""

    unfreeze: str = "fc6,fc7"
    backbone_lr_scale: float = 0.1  # learning rate of unfrozen backbone layers, relative to the head's
    workers: int | None = None

    def __post_init__(self) -> None:
        from .extraction import check_workers

        check_workers(self.workers)


def train_end_to_end(dataset, spec: HeadSpec, model, head, backbone: str, preprocessing, precision: str, device: str,
                     setup: EndToEnd, config: TrainConfig, checkpoint: Path, progress=None) -> HeadResult:
    """Train the head and the unfrozen layers from images, with random resized crops and flips."""
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from .extraction import _default_workers

    config.check()
    unfreeze(model, head, backbone, setup.unfreeze)
    prefixes = unfreeze_prefixes(backbone, setup.unfreeze)
    head_ids = {id(p) for p in head.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) in head_ids]}]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    if rest:
        groups.append({"params": rest, "lr": config.lr * setup.backbone_lr_scale})
    model.to(device, memory_format=torch.channels_last)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(preprocessing.crop, scale=(0.5, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(preprocessing.mean, preprocessing.std),
    ])
    plain = preprocessing.transform()
    train_samples = dataset.samples("train")
    fit, val = validation_split(np.array([s.label for s in train_samples]), config.val_fraction, config.seed)

    def images(samples, transform):
        return _LabelledImages([dataset.path(s) for s in samples], [s.label for s in samples], transform,
                               preprocessing.color, preprocessing.crop)

    sets = {"fit": images([train_samples[i] for i in fit], augment),
            "val": images([train_samples[i] for i in val], plain),
            "test": images(dataset.samples("test"), plain)}
    workers = _default_workers(device) if setup.workers is None else setup.workers

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def set_modes() -> None:
        model.eval()
        for name, module in model.named_modules():
            if module is head or (name and _matches(name, prefixes)) or prefixes == ("",):
                module.train()

    def fit_epoch(optimizer, generator):
        set_modes()
        loader = DataLoader(sets["fit"], batch_size=config.batch_size, shuffle=True, generator=generator,
                            num_workers=workers, pin_memory=device == "cuda")
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            with autocast():
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, ignore_index=-1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            known = y >= 0
            total_loss += loss.item() * int(known.sum())
            correct += int((logits.argmax(1)[known] == y[known]).sum())
            seen += int(known.sum())
        return Scores(total_loss / max(seen, 1), correct / max(seen, 1), None)

    def evaluate(split: str) -> Scores:
        model.eval()
        loader = DataLoader(sets[split], batch_size=config.batch_size, num_workers=workers)
        logits, labels = [], []
        with torch.inference_mode(), autocast():
            for x, y in loader:
                logits.append(model(x.to(device, memory_format=torch.channels_last)).float().cpu())
                labels.append(y)
        return Scores.of(torch.cat(logits), torch.cat(labels))

    task = TrainingTask(model, groups, fit_epoch, evaluate)
    return train(task, len(dataset.classes), config, checkpoint, progress)
