"""Image folders in, a labelled train/test listing out.

Two layouts are read: ``DIR/train/<class>/*`` + ``DIR/test/<class>/*`` (a fixed split), or
``DIR/<class>/*``, split here by drawing ``train_per_class`` images per class with a seed.
Nothing here imports torch, so ``transfer data info`` and ``--help`` stay fast.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from transfer.core.config import require
from transfer.core.errors import UserError
from transfer.core.keys import KeyKind, bytes_digest, content_key
from transfer.data.images import IMAGE_EXTENSIONS, UnreadableImage, image_size

SPLITS = ("train", "test")

DEFAULT_TRAIN_PER_CLASS = 100  # the 15-Scene protocol's


@dataclass(frozen=True, kw_only=True)
class SplitPolicy:
    """How a ``DIR/<class>/*`` folder is split (ignored for a ``train``/``test`` layout)."""

    train_per_class: int | None = DEFAULT_TRAIN_PER_CLASS  # None: list every image, split nothing (`transfer data info`)
    seed: int = 0
    test_per_class: int | None = None  # at most this many test images per class (any layout); None: all

    def __post_init__(self) -> None:
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, f"{name} must be at least 1, got {value}")


UNSPLIT = "pooled, not split"


@dataclass(frozen=True)
class Sample:
    relpath: str  # relative to the dataset root, with forward slashes
    label: int


@dataclass
class ImageDataset:
    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    layout: str  # "train/test" or "pooled"
    ignored_files: list[str] = field(default_factory=list)

    def samples(self, split: str) -> list[Sample]:
        return self.splits[split]

    def path(self, sample: Sample) -> Path:
        return self.root / sample.relpath

    @cached_property
    def file_digests(self) -> dict[str, str]:
        """Content hash of every image, by relative path."""
        return {
            s.relpath: bytes_digest(self.path(s).read_bytes())
            for split in SPLITS
            for s in self.splits[split]
        }

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever any image's bytes, its class, its split or the class order change."""
        digests = self.file_digests
        listing = {
            "classes": self.classes,
            "splits": {
                split: [[s.relpath, s.label, digests[s.relpath]] for s in self.splits[split]]
                for split in SPLITS
            },
        }
        return content_key(KeyKind.DATASET, **listing)

    def limited(self, per_class: int, seed: int = 0) -> ImageDataset:
        """The same dataset with at most ``per_class`` images per class in each split (a seeded draw,
        listing order kept): quick studies and benchmarks on a slice of the data."""
        if per_class < 1:
            raise UserError(f"per_class must be at least 1, got {per_class}")
        rng = random.Random(seed)
        splits = {split: _capped(self.splits[split], per_class, rng) for split in SPLITS}
        return ImageDataset(self.root, self.classes, splits, self.layout, self.ignored_files)

    def duplicate_groups(self) -> list[list[tuple[str, str]]]:
        """Groups of byte-identical images, each member as (split, relative path)."""
        where = {s.relpath: split for split in SPLITS for s in self.splits[split]}
        by_digest: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for relpath, digest in self.file_digests.items():
            by_digest[digest].append((where[relpath], relpath))
        return sorted(sorted(group) for group in by_digest.values() if len(group) > 1)

    def test_duplicates(self) -> list[str]:
        """Test images byte-identical to a training image: their test predictions are not independent."""
        in_train = {self.file_digests[s.relpath] for s in self.splits["train"]}
        return [s.relpath for s in self.splits["test"] if self.file_digests[s.relpath] in in_train]

    def duplicates_note(self) -> str | None:
        """One line for users and reports when the splits share images; None when they do not."""
        shared = self.test_duplicates()
        if not shared:
            return None
        return (f"{len(shared)} test image(s) are byte-identical to training images "
                f"(`transfer data info {self.root}` lists them)")


def _image_files(directory: Path, ignored: list[str], root: Path) -> list[Path]:
    files = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        elif path.is_file():
            ignored.append(path.relative_to(root).as_posix())
    return files


def _class_dirs(directory: Path) -> dict[str, Path]:
    """Class folders keyed by their case-folded name; two that differ only in case are an error."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        key = path.name.casefold()
        if key in found:
            raise UserError(f"{directory}: class folders {found[key].name!r} and {path.name!r} differ only in case")
        found[key] = path
    return found


def _split_dir(root: Path, split: str) -> Path | None:
    for path in root.iterdir():
        if path.is_dir() and path.name.casefold() == split:
            return path
    return None


def load_dataset(root: str | Path, policy: SplitPolicy = SplitPolicy()) -> ImageDataset:
    """List a dataset folder; every problem a user can fix is a UserError saying what and where."""
    root = Path(root)
    if not root.exists():
        raise UserError(
            f"dataset folder {root} does not exist. Pass --data DIR (DIR/train/<class>/*.jpg and "
            f"DIR/test/<class>/*.jpg, or DIR/<class>/*.jpg), set TRANSFER_DATA, or run "
            f"`transfer data fetch 15scene`."
        )
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a dataset folder")
    split_dirs = {split: _split_dir(root, split) for split in SPLITS}
    ignored: list[str] = []
    if all(split_dirs.values()):
        dataset = _load_presplit(root, split_dirs, ignored)  # type: ignore[arg-type]
    elif any(split_dirs.values()):
        have = next(s for s, d in split_dirs.items() if d)
        missing = next(s for s, d in split_dirs.items() if not d)
        raise UserError(f"{root} has a {have!r} folder but no {missing!r} folder")
    else:
        dataset = _load_pooled(root, policy, ignored)
    dataset.ignored_files = ignored
    if policy.test_per_class is not None:
        dataset.splits["test"] = _capped(dataset.splits["test"], policy.test_per_class, random.Random(policy.seed))
    return dataset


def _capped(samples: list[Sample], per_class: int, rng: random.Random) -> list[Sample]:
    """At most ``per_class`` samples of each class, drawn with ``rng``, in listing order."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_class[sample.label].append(index)
    kept = {i for indices in by_class.values() for i in rng.sample(indices, min(per_class, len(indices)))}
    return [s for i, s in enumerate(samples) if i in kept]


def _load_presplit(root: Path, split_dirs: dict[str, Path], ignored: list[str]) -> ImageDataset:
    per_split = {split: _class_dirs(directory) for split, directory in split_dirs.items()}
    keys = {split: set(dirs) for split, dirs in per_split.items()}
    for split, other in (("train", "test"), ("test", "train")):
        only_here = sorted(keys[split] - keys[other])
        if only_here:
            names = ", ".join(per_split[split][k].name for k in only_here)
            raise UserError(f"{root}: class(es) {names} found in {split!r} but not in {other!r}")
    if not keys["train"]:
        raise UserError(f"{root}: no class folders under {split_dirs['train']}")
    order = sorted(keys["train"])
    classes = [per_split["train"][k].name for k in order]
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        samples = []
        for label, key in enumerate(order):
            files = _image_files(per_split[split][key], ignored, root)
            if not files:
                raise UserError(f"class {per_split[split][key].name!r} has no images in {per_split[split][key]}")
            samples += [Sample(f.relative_to(root).as_posix(), label) for f in files]
        splits[split] = samples
    return ImageDataset(root, classes, splits, "train/test")


def _load_pooled(root: Path, policy: SplitPolicy, ignored: list[str]) -> ImageDataset:
    dirs = _class_dirs(root)
    if not dirs:
        raise UserError(
            f"{root} has no class folders: expected DIR/train/<class>/* + DIR/test/<class>/*, or DIR/<class>/*"
        )
    order = sorted(dirs)
    files = {key: _image_files(dirs[key], ignored, root) for key in order}
    classes = [dirs[k].name for k in order]
    if policy.train_per_class is None:
        listed = [Sample(f.relative_to(root).as_posix(), label) for label, key in enumerate(order) for f in files[key]]
        return ImageDataset(root, classes, {"train": listed, "test": []}, UNSPLIT)
    smallest = min(order, key=lambda key: len(files[key]))
    if len(files[smallest]) <= policy.train_per_class:
        raise UserError(
            f"the smallest class, {dirs[smallest].name!r}, has {len(files[smallest])} image(s): --train-per-class "
            f"{policy.train_per_class} would leave it none for test; this data allows at most "
            f"{len(files[smallest]) - 1} (`transfer data info {root}` lists every class)"
        )
    rng = random.Random(policy.seed)
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for label, key in enumerate(order):
        picked = set(rng.sample(range(len(files[key])), policy.train_per_class))
        for i, f in enumerate(files[key]):
            splits["train" if i in picked else "test"].append(Sample(f.relative_to(root).as_posix(), label))
    return ImageDataset(root, classes, splits, "pooled")


@dataclass
class DatasetSummary:
    counts: dict[str, Counter]  # split -> class name -> images
    sizes: Counter  # (width, height) -> images
    modes: Counter  # PIL mode -> images
    unreadable: list[str]
    duplicates: list[list[tuple[str, str]]]


def summarize(dataset: ImageDataset) -> DatasetSummary:
    counts = {split: Counter(dataset.classes[s.label] for s in dataset.samples(split)) for split in SPLITS}
    sizes: Counter = Counter()
    modes: Counter = Counter()
    unreadable = []
    for split in SPLITS:
        for sample in dataset.samples(split):
            try:
                size, mode = image_size(dataset.path(sample))
            except UnreadableImage:
                unreadable.append(sample.relpath)
                continue
            sizes[size] += 1
            modes[mode] += 1
    return DatasetSummary(counts, sizes, modes, unreadable, dataset.duplicate_groups())
