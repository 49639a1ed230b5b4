"""`transfer data fetch`: download a public dataset archive, check it, lay it out as train/test."""

from __future__ import annotations

import os
import random
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transfer.core.console import console, progress_bar
from transfer.core.errors import UserError
from transfer.data.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class PublicDataset:
    name: str
    url: str
    url_env: str  # environment variable that overrides the URL (a mirror, or a local file:// copy)
    classes: tuple[str, ...]
    images: int
    train_per_class: int


FIFTEEN_SCENE = PublicDataset(
    name="15scene",
    url="https://figshare.com/ndownloader/files/12406613",
    url_env="TRANSFER_15SCENE_URL",
    classes=(
        "bedroom", "coast", "forest", "highway", "industrial", "insidecity", "kitchen", "livingroom",
        "mountain", "office", "opencountry", "store", "street", "suburb", "tallbuilding",
    ),
    images=4485,
    train_per_class=100,
)
PUBLIC_DATASETS = {FIFTEEN_SCENE.name: FIFTEEN_SCENE}


def _manual_instructions(dataset: PublicDataset, dest: Path) -> str:
    return (
        f"Place the data by hand instead: {dest}/train/<class>/*.jpg and {dest}/test/<class>/*.jpg "
        f"({dataset.train_per_class} training images per class), or {dest}/<class>/*.jpg and let "
        f"transfer split it; then pass --data {dest} or set TRANSFER_DATA. A local archive can be "
        f"used with {dataset.url_env}=file:///path/to/archive.zip."
    )


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=20) as response:
        total = int(response.headers.get("Content-Length") or 0)
        with open(target, "wb") as out, progress_bar(total or 1, "download", unit="B") as advance:
            while block := response.read(1 << 20):
                out.write(block)
                advance(len(block))


def _unpack(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")
    else:
        raise UserError(f"the downloaded file is neither a zip nor a tar archive ({archive.stat().st_size} bytes)")


def _find_class_dirs(root: Path, classes: tuple[str, ...]) -> dict[str, list[Path]]:
    """Images of each class, from every folder whose name is the class's (any case, any depth)."""
    found: dict[str, list[Path]] = {c: [] for c in classes}
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        name = directory.name.casefold()
        if name in found:
            found[name] += sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return found


def unreachable(name: str, dest: Path, timeout: float = 5.0) -> str | None:
    """Why the public dataset ``name`` cannot be downloaded now, with how to place it by hand; None when its
    archive answers within ``timeout`` seconds (asked before a study starts, so that it stops at once)."""
    dataset = PUBLIC_DATASETS[name]
    url = os.environ.get(dataset.url_env, dataset.url)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
        return f"{url} cannot be reached ({getattr(error, 'reason', error)}). {_manual_instructions(dataset, dest)}"


def fetch(name: str, dest: Path, seed: int = 0) -> Path:
    try:
        dataset = PUBLIC_DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(PUBLIC_DATASETS)}") from None
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} already exists and is not empty; remove it or pass another --dest")
    url = os.environ.get(dataset.url_env, dataset.url)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        try:
            _download(url, archive)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise UserError(f"could not download {url}: {error}. {_manual_instructions(dataset, dest)}") from error
        _unpack(archive, Path(tmp) / "unpacked")
        found = _find_class_dirs(Path(tmp) / "unpacked", dataset.classes)
        count = sum(len(v) for v in found.values())
        missing = [c for c, files in found.items() if not files]
        if missing or count != dataset.images:
            raise UserError(
                f"the archive does not look like {name}: {count} images (expected {dataset.images}), "
                f"missing classes: {', '.join(missing) or 'none'}. {_manual_instructions(dataset, dest)}"
            )
        rng = random.Random(seed)
        for cls, files in found.items():
            train = set(rng.sample(range(len(files)), dataset.train_per_class))
            for i, source in enumerate(files):
                target = dest / ("train" if i in train else "test") / cls / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    console.print(f"{name}: {count} images in {len(found)} classes laid out under {dest}")
    return dest
