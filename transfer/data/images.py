"""Reading an image file: the one place that decodes images and decides what counts as unreadable.

Images come out as a viewer shows them: EXIF orientation applied, 16-bit and float images scaled to
8 bits (not clipped to white), grayscale replicated to three channels unless colour is kept. A file
that cannot be decoded, or that is over Pillow's decompression-bomb limit, raises `UnreadableImage`;
callers skip it with a warning naming the file (or stop, with ``--strict``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from transfer.core.errors import UserError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


class UnreadableImage(Exception):
    """An image file that cannot be used; the message says why."""


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit integer and float images scaled into 0-255 (Pillow's own conversion clips them)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    return image


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The image file open; whatever keeps it from being read is an `UnreadableImage` saying why."""
    try:
        with Image.open(path) as image:
            yield image
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"over Pillow's decompression-bomb limit ({error})") from error
    except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for broken or foreign files
        raise UnreadableImage(f"cannot be decoded ({type(error).__name__}: {error})") from error


def _decode(path: Path) -> Image.Image:
    with _opened(path) as image:
        image.load()  # decode fully, so a truncated file fails here rather than later
        return _eight_bit(ImageOps.exif_transpose(image))


def read_bands(path: Path, color: bool = False) -> Image.Image:
    """The image in RGB, or without ``color`` in grayscale (one band: an extraction's preprocessing spreads
    it to three channels after resizing, a third of the work of resizing it replicated)."""
    return _decode(path).convert("RGB" if color else "L")


def read_image(path: Path, color: bool = False) -> Image.Image:
    """RGB image; without ``color``, read as grayscale and replicated to three channels."""
    return read_bands(path, color).convert("RGB")


def read_gray(path: Path) -> np.ndarray:
    """Grayscale pixels, uint8 (height, width)."""
    return np.asarray(_decode(path).convert("L"))


def image_size(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), mode) from the header alone, orientation applied; `UnreadableImage` if unreadable."""
    with _opened(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)  # 5-8: rotated by 90° or 270°
        return ((height, width) if orientation in (5, 6, 7, 8) else (width, height)), image.mode


def image_paths(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for images."""
    paths = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.exists():
            paths.append(item)
        else:
            raise UserError(f"{item} does not exist")
    if not paths:
        raise UserError("no images given (files, or folders that contain images)")
    return paths
