"""New classification heads trained on cached features of a frozen backbone.

The head is chosen on training data only: a stratified part of the training split
(``val_fraction``) drives early stopping and the best epoch; the test split is scored once, at the end.
A checkpoint is written at most every minute, at the end and on an interruption between epochs, so an
interrupted run resumes close to where it stopped (`training.CHECKPOINT_SECONDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfer.classifiers.training import (
    Compute,
    RunningScores,
    Scores,
    TrainConfig,
    TrainingResult,
    TrainingTask,
    train,
    validation_split,
)
from transfer.core.config import ConfigError, require
from transfer.core.errors import UserError

DEFAULT_HEAD = "fc"  # one new linear layer with an output per class


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    """``fcN``: one linear layer (VGG16's fc8 replaced); ``mlp:H1,H2``: Linear→ReLU→Dropout per hidden size."""

    name: str
    hidden: tuple[int, ...] = ()
    dropout: float = 0.5

    def __post_init__(self) -> None:
        require(0 <= self.dropout < 1, "dropout", f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def parse(cls, text: str, n_classes: int | None, dropout: float = 0.5) -> HeadSpec:
        """``n_classes`` None: the form alone is checked (a study file, before its data is read)."""
        if text.startswith("fc"):
            count = text[2:]
            require(not count or count.isdigit(), "head", f"head {text!r}: expected fc or fcN (N = the number of classes)")
            if n_classes is None:
                return cls(name=text, dropout=dropout)
            require(not count or int(count) == n_classes, "head",
                    f"head {text}: the data has {n_classes} classes, so the head is fc{n_classes} (or fc)")
            return cls(name=f"fc{n_classes}", dropout=dropout)
        if text.startswith("mlp:"):
            try:
                hidden = tuple(int(h) for h in text[4:].split(","))
            except ValueError:
                raise ConfigError("head", f"head {text}: expected mlp:H1,H2,... with integer sizes") from None
            require(bool(hidden) and min(hidden) >= 1, "head", f"head {text}: hidden sizes must be positive")
            return cls(name=text, hidden=hidden, dropout=dropout)
        raise ConfigError("head", f"unknown head {text!r}: use fc (a new last layer sized to the classes) or mlp:1024,1024")

    def input_layer(self, backbone: str) -> str:
        """The layer whose features the head reads (the backbone's registry entry says which)."""
        from transfer.features.registry import get_backbone

        spec = get_backbone(backbone)
        return spec.architecture.mlp_head_input if self.hidden else spec.architecture.fc_head_input

    def replaced_module(self, backbone: str) -> str:
        """The module of the backbone that the head replaces when it is trained end to end."""
        from transfer.features.registry import get_backbone

        spec = get_backbone(backbone)
        return spec.architecture.mlp_head_module if self.hidden else spec.architecture.fc_head_module

    def build(self, in_features: int, n_classes: int):
        from torch import nn

        layers: list[nn.Module] = []
        width = in_features
        for size in self.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(self.dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)


def _tensor_evaluator(head, splits: dict, batch: int = 1024):
    """evaluate(split) over in-memory features."""
    import torch

    def evaluate(split: str) -> Scores:
        x, y = splits[split]
        head.eval()
        with torch.inference_mode():
            return Scores.of(torch.cat([head(x[i : i + batch]) for i in range(0, len(x), batch)]).cpu(), y.cpu())

    return evaluate


def train_head(
    spec: HeadSpec,
    train_data: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    config: TrainConfig,
    checkpoint: Path,
    progress=None,
    score_test: bool = True,
    device: str = "cpu",
) -> TrainingResult:
    """A head on cached features: no image goes through the network during the epochs. The features
    move to ``device`` once; heads train in fp32 (bf16 autocast did not speed them up on CPUs)."""
    import torch
    from torch.nn import functional as F

    x_all = torch.as_tensor(train_data[0], dtype=torch.float32)
    y_all = torch.as_tensor(train_data[1], dtype=torch.long)
    fit, val = validation_split(train_data[1], config.val_fraction, config.seed)
    splits = {"fit": (x_all[fit], y_all[fit]), "val": (x_all[val], y_all[val]),
              "test": (torch.as_tensor(test[0], dtype=torch.float32), torch.as_tensor(test[1], dtype=torch.long))}
    splits = {name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()}
    torch.manual_seed(config.seed)
    head = spec.build(x_all.shape[1], n_classes).to(device)
    x_fit, y_fit = splits["fit"]

    def fit_epoch(optimizer, generator) -> Scores:
        head.train()
        running = RunningScores()
        order = torch.randperm(len(y_fit), generator=generator)
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size].to(device)
            logits = head(x_fit[batch])
            loss = F.cross_entropy(logits, y_fit[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running.add(logits, y_fit[batch], loss)
        return running.scores()

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
    from transfer.features.registry import get_backbone

    available = get_backbone(backbone).architecture.unfreeze_groups
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

        from transfer.data.images import UnreadableImage, read_image

        try:
            return self.transform(read_image(self.paths[index], self.color)), self.labels[index]
        except UnreadableImage:
            return torch.zeros(3, self.size, self.size), -1


@dataclass(frozen=True, kw_only=True)
class EndToEnd:
    """What an end-to-end run needs besides the head and the training settings."""

    unfreeze: str = "fc6,fc7"
    backbone_lr_scale: float = 0.1  # learning rate of unfrozen backbone layers, relative to the head's
    workers: int | None = None

    def __post_init__(self) -> None:
        from transfer.features.spec import check_workers

        check_workers(self.workers)
        require(self.backbone_lr_scale > 0, "backbone_lr_scale",
                f"backbone_lr_scale must be positive, got {self.backbone_lr_scale}")


def train_end_to_end(dataset, spec: HeadSpec, model, head, backbone: str, preprocessing, precision: str, device: str,
                     setup: EndToEnd, config: TrainConfig, checkpoint: Path, progress=None) -> TrainingResult:
    """Train the head and the unfrozen layers from images, with random resized crops and flips."""
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from transfer.core.device import default_workers

    unfreeze(model, head, backbone, setup.unfreeze)
    prefixes = unfreeze_prefixes(backbone, setup.unfreeze)
    head_ids = {id(p) for p in head.parameters()}
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if id(p) in head_ids]}]
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
    workers = default_workers(device) if setup.workers is None else setup.workers

    autocast = Compute(device=device, precision=precision).autocast

    def set_modes() -> None:
        model.eval()
        for name, module in model.named_modules():
            if module is head or (name and _matches(name, prefixes)) or prefixes == ("",):
                module.train()

    def fit_epoch(optimizer, generator):
        set_modes()
        # a last batch of one image is left out: batch normalisation in training cannot take one value
        # per channel (1x1 maps, small inputs), and one image's statistics would be noise anyway
        loader = DataLoader(sets["fit"], batch_size=config.batch_size, shuffle=True, generator=generator,
                            num_workers=workers, pin_memory=device == "cuda",
                            drop_last=len(sets["fit"]) % config.batch_size == 1)
        running = RunningScores()
        for x, y in loader:
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            with autocast():
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, ignore_index=-1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running.add(logits, y, loss)
        return running.scores()

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
