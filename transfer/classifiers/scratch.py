"""Small CNNs trained from scratch: the baseline that shows what transfer buys.

Images are decoded once, resized to ``size``×``size`` and held in memory as uint8 tensors (3 KB per
32×32 image), so an epoch reads no file. Training goes
through the same loop as the heads (`training.train`): validation part of the training split for the
best epoch and early stopping, checkpoints (`training.CHECKPOINT_SECONDS`), the test split scored once at the end.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

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
from transfer.core.choices import Augmentation, Schedule
from transfer.core.config import choice, require
from transfer.core.errors import UserError
from transfer.core.paths import dataset_dir
from transfer.data.datasets import SPLITS, ImageDataset
from transfer.data.images import UnreadableImage, read_image

if TYPE_CHECKING:
    import torch

CIFAR10_ENV = "TRANSFER_CIFAR10"


# ------------------------------------------------------------------------------ architectures

def _base(n_classes: int, size: int, batchnorm: bool, dropout: float):
    """conv5×5/32 → pool → conv5×5/64 → pool → conv5×5/64 → pool → fc1000 → fc classes (all convs padded)."""
    from torch import nn

    layers: list = []
    width = 3
    for channels in (32, 64, 64):
        layers += [nn.Conv2d(width, channels, 5, padding=2)] + ([nn.BatchNorm2d(channels)] if batchnorm else [])
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        width = channels
    side = size // 8
    layers += [nn.Flatten()] + ([nn.Dropout(dropout)] if dropout else [])
    layers += [nn.Linear(64 * side * side, 1000), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
    layers.append(nn.Linear(1000, n_classes))
    return nn.Sequential(*layers)


def _small(blocks: tuple[tuple[int, ...], ...]) -> Callable:
    """3×3 convolutions in blocks (a 2×2 max-pool after each), global average pooling, one linear layer."""

    def build(n_classes: int, size: int, batchnorm: bool, dropout: float):
        from torch import nn

        layers: list = []
        width = 3
        for block in blocks:
            for channels in block:
                layers += [nn.Conv2d(width, channels, 3, padding=1)] + ([nn.BatchNorm2d(channels)] if batchnorm else [])
                layers.append(nn.ReLU())
                width = channels
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] + ([nn.Dropout(dropout)] if dropout else [])
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)

    return build


ARCHITECTURES: dict[str, Callable] = {
    "base": _base,
    # 3×3 variants under 256k parameters: few wide layers, many narrow ones, and both.
    "wide": _small(((64,), (128,), (128,))),
    "deep": _small(((32, 32), (48, 48), (64, 64), (96,))),
    "widedeep": _small(((48, 48), (64, 64), (96, 96))),
}


def build_network(arch: str, n_classes: int, size: int, batchnorm: bool = False, dropout: float = 0.0):
    import torch

    require(arch in ARCHITECTURES, "arch", f"unknown arch {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if size < 8:  # three 2×2 poolings
        raise UserError(f"input size must be at least 8 pixels, got {size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ARCHITECTURES[arch](n_classes, size, batchnorm, dropout)


@dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str
    output: tuple[int, ...]
    parameters: int
    macs: int


def summarize_network(arch: str, n_classes: int = 10, size: int = 32, batchnorm: bool = False,
                      dropout: float = 0.0) -> list[LayerSummary]:
    """Every layer's output shape (one image), parameters and multiply-accumulates."""
    import torch
    from torch import nn

    model = build_network(arch, n_classes, size, batchnorm, dropout).eval()
    rows: list[LayerSummary] = []

    def hook(module, inputs, output):
        params = sum(p.numel() for p in module.parameters())
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features
        else:
            macs = 0
        rows.append(LayerSummary(names[module], type(module).__name__, tuple(output.shape[1:]), params, macs))

    names = {module: name for name, module in model.named_children()}
    for module in names:
        module.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return rows


# ------------------------------------------------------------------------------------- data

@dataclass
class ImageTensors:
    """Decoded images, uint8 N×3×S×S, with labels, per split."""

    classes: list[str]
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # images, labels
    name: str  # dataset path, or "cifar10"
    fingerprint: str


def load_images(dataset: ImageDataset, size: int, color: bool = False) -> ImageTensors:
    import torch
    from PIL import Image

    from transfer.core.console import progress_bar, warn

    splits = {}
    for split in SPLITS:
        samples = dataset.samples(split)
        pixels = np.zeros((len(samples), size, size, 3), dtype=np.uint8)
        labels = np.array([s.label for s in samples], dtype=np.int64)
        with progress_bar(len(samples), f"decode {split} {size}×{size}") as advance:
            for i, sample in enumerate(samples):
                try:
                    image = read_image(dataset.path(sample), color)
                except UnreadableImage as error:
                    warn(f"skipping unreadable image {sample.relpath}: {error}")
                    labels[i] = -1  # left out of losses and scores
                    continue
                pixels[i] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
                advance()
        splits[split] = (torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    return ImageTensors(dataset.classes, splits, str(dataset.root), dataset.fingerprint)


def load_cifar10(root: Path | None = None) -> ImageTensors:
    """CIFAR-10 from a local copy (torchvision's layout) or torchvision's download."""
    import torch
    from torchvision.datasets import CIFAR10

    root = Path(root or os.environ.get(CIFAR10_ENV) or dataset_dir("cifar10"))
    splits = {}
    try:
        for split in SPLITS:
            data = CIFAR10(str(root), train=split == "train", download=not (root / "cifar-10-batches-py").is_dir())
            splits[split] = (torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(data.targets))
    except Exception as error:  # URLError and friends: no internet
        raise UserError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({type(error).__name__}: {error}). "
            f"Put torchvision's cifar-10-batches-py folder there, or set {CIFAR10_ENV}=DIR."
        ) from error
    return ImageTensors(list(data.classes), splits, "cifar10", "cifar10")


# --------------------------------------------------------------------------------- training

# How a network from scratch trains by default: plain SGD at a constant rate (the ladder's baseline).
SCRATCH_TRAIN = TrainConfig(lr=0.05, momentum=0.0, weight_decay=0.0, schedule=Schedule.NONE, batch_size=32, epochs=60,
                            patience=15, lr_decay=1.0)


@dataclass(frozen=True, kw_only=True)
class ScratchConfig:
    """One rung of the ladder: architecture and the improvements switched on, plus training settings."""

    arch: str = "base"
    size: int = 32
    normalize: bool = False  # per-channel mean/std of the fit part of the training split
    augment: tuple[str, ...] = ()  # crop: random (size·7/8)² crops in training, centre crop in evaluation; flip
    batchnorm: bool = False
    dropout: float = 0.0
    train: TrainConfig = SCRATCH_TRAIN

    def __post_init__(self) -> None:
        require(self.arch in ARCHITECTURES, "arch", f"unknown arch {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
        object.__setattr__(self, "augment", tuple(choice(Augmentation, a, "augment") for a in self.augment))
        require(self.size >= 16, "size", f"size must be at least 16, got {self.size}")
        require(0 <= self.dropout < 1, "dropout", f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def input_size(self) -> int:
        return self.size * 7 // 8 if "crop" in self.augment else self.size


def ladder(config: ScratchConfig) -> list[tuple[str, ScratchConfig]]:
    """The improvement ladder: each step adds one thing to the previous one."""
    steps = [("baseline", replace(config, normalize=False, augment=(), batchnorm=False, dropout=0.0,
                                  train=replace(config.train, momentum=0.0, schedule=Schedule.NONE)))]
    for name, change in (
        ("+normalize", lambda c: replace(c, normalize=True)),
        ("+augment", lambda c: replace(c, augment=tuple(Augmentation))),
        ("+momentum/schedule", lambda c: replace(c, train=replace(c.train, momentum=0.9, schedule="exp", lr_decay=0.95))),
        ("+dropout", lambda c: replace(c, dropout=0.5)),
        ("+batchnorm", lambda c: replace(c, batchnorm=True)),
    ):
        steps.append((name, change(steps[-1][1])))
    return steps


GRID_KEYS = {"lr": float, "batch": int, "dropout": float, "momentum": float, "epochs": int}


def parse_grid(text: str) -> dict[str, list]:
    """``lr=0.01,0.1,batch=32,64`` → {"lr": [0.01, 0.1], "batch": [32, 64]}."""
    grid: dict[str, list] = {}
    for part in re.split(r",(?=\s*[a-z_]+\s*=)", text.strip()):
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in GRID_KEYS or not values.strip():
            raise UserError(f"--grid {text!r}: expected KEY=V1,V2,... with KEY one of {', '.join(GRID_KEYS)}")
        try:
            grid[key] = [GRID_KEYS[key](v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--grid {key}: {values!r} are not {GRID_KEYS[key].__name__} values") from None
    return grid


def grid_configs(config: ScratchConfig, grid: dict[str, list]) -> list[tuple[str, ScratchConfig]]:
    configs = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        c = config
        for key, value in setting.items():
            c = replace(c, dropout=value) if key == "dropout" else replace(
                c, train=replace(c.train, **{{"batch": "batch_size"}.get(key, key): value}))
        configs.append((" ".join(f"{k}={v:g}" for k, v in setting.items()), c))
    return configs


def channel_stats(images) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0–1 scale) of the given images."""
    x = images.float() / 255
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def random_crops_and_flips(images, augment: tuple[str, ...], out: int, generator):
    """Training-time augmentation of a uint8 batch: a random out×out crop each, and/or a random flip."""
    import torch

    n, _, size, _ = images.shape
    if "crop" in augment:
        offsets = torch.randint(0, size - out + 1, (n, 2), generator=generator)
        images = torch.stack([img[:, y : y + out, x : x + out] for img, (y, x) in zip(images, offsets.tolist())])
    if "flip" in augment:
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images


def centre_crop(images, out: int):
    start = (images.shape[-1] - out) // 2
    return images[..., start : start + out, start : start + out]


@dataclass
class ScratchResult:
    result: TrainingResult
    config: ScratchConfig
    mean: list[float]
    std: list[float]
    parameters: int


def train_scratch(data: ImageTensors, config: ScratchConfig, checkpoint: Path, progress=None,
                  compute: Compute = Compute()) -> ScratchResult:
    """Train one network; only the fit part of the training split feeds the weights and the
    normalisation, the validation part picks the epoch, the test split is scored once. The images
    move to ``compute.device`` once; convolutions run channels-last (oneDNN's fast layout on CPUs)."""
    import torch
    from torch.nn import functional as F

    device = compute.device
    x_train, y_train = data.splits["train"]
    x_test, y_test = data.splits["test"]
    fit_rows, val_rows = validation_split(y_train.numpy(), config.train.val_fraction, config.train.seed)
    fit, val = torch.from_numpy(fit_rows), torch.from_numpy(val_rows)
    sets = {name: (x.to(device), y.to(device)) for name, (x, y) in
            {"fit": (x_train[fit], y_train[fit]), "val": (x_train[val], y_train[val]), "test": (x_test, y_test)}.items()}
    mean, std = channel_stats(sets["fit"][0]) if config.normalize else ([0.0] * 3, [1.0] * 3)
    mean_t, std_t = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))
    side = config.input_size

    def prepare(images):
        return ((images.float() / 255 - mean_t) / std_t).contiguous(memory_format=torch.channels_last)

    model = build_network(config.arch, len(data.classes), side, config.batchnorm, config.dropout)
    model.to(device, memory_format=torch.channels_last)
    torch.manual_seed(config.train.seed)
    x_fit, y_fit = sets["fit"]

    def fit_epoch(optimizer, generator) -> Scores:
        """One pass over the fit images; their scores are those of the batches as trained (no second pass)."""
        model.train()
        running = RunningScores()
        order = torch.randperm(len(y_fit), generator=generator)
        for i in range(0, len(order), config.train.batch_size):
            batch = order[i : i + config.train.batch_size].to(device)
            images = random_crops_and_flips(x_fit[batch], config.augment, side, generator)
            with compute.autocast():
                logits = model(prepare(images)).float()
            loss = F.cross_entropy(logits, y_fit[batch], ignore_index=-1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running.add(logits, y_fit[batch], loss)
        return running.scores()

    def evaluate(split: str) -> Scores:
        images, labels = sets[split]
        model.eval()
        with torch.inference_mode(), compute.autocast():
            logits = torch.cat([model(prepare(centre_crop(images[i : i + 512], side))).float()
                                for i in range(0, len(images), 512)])
        return Scores.of(logits.cpu(), labels.cpu())

    task = TrainingTask(model, [{"params": list(model.parameters())}], fit_epoch, evaluate)
    result = train(task, len(data.classes), config.train, checkpoint, progress)
    return ScratchResult(result, config, mean, std, sum(p.numel() for p in model.parameters()))


def config_dict(config: ScratchConfig) -> dict:
    return {**asdict(config), "augment": list(config.augment)}
