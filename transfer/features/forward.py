"""The forward pass that every engine shares: image files into batches, batches through the network into
one float32 array per requested layer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from transfer.core.choices import Spatial, Tokens, View
from transfer.core.device import default_workers, fp32_means_fp32
from transfer.data.images import UnreadableImage, read_bands
from transfer.features.backbones import Preprocessing


@dataclass(frozen=True)
class Reduction:
    """How a layer's output becomes one vector per image: maps (C×H×W) by ``spatial``, a transformer's
    tokens (T×D) by ``tokens``, after ``prefix_tokens`` tokens that are not patches (the class token first)."""

    spatial: str = Spatial.FLATTEN
    tokens: str | None = None  # None: the class token
    prefix_tokens: int = 0

    def __call__(self, output):
        import torch

        if output.dim() == 3:
            if self.tokens == Tokens.MEAN:
                return output[:, self.prefix_tokens:].mean(dim=1)
            if self.tokens == Tokens.CLS_MEAN:
                return torch.cat([output[:, 0], output[:, self.prefix_tokens:].mean(dim=1)], dim=1)
            return output[:, 0]
        if output.dim() == 2:
            return output
        if self.spatial == Spatial.AVG:
            return output.mean(dim=(2, 3))
        if self.spatial == Spatial.MAX:
            return output.amax(dim=(2, 3))
        return output.flatten(1)


class ImageFiles:
    """Map-style dataset over image paths: each item the image's views in uint8 (`Preprocessing.views_pixels`)
    and whether it was readable (an unreadable image yields zeros and False)."""

    def __init__(self, paths: list[Path], preprocessing: Preprocessing) -> None:
        self.paths = paths
        self.preprocessing = preprocessing
        self.views = preprocessing.views_pixels()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        try:
            return self.views(read_bands(self.paths[index], self.preprocessing.color)), True
        except UnreadableImage:
            size, bands = self.preprocessing.crop, 3 if self.preprocessing.color else 1
            return torch.zeros(View(self.preprocessing.views).images, bands, size, size, dtype=torch.uint8), False


def make_loader(paths: list[Path], preprocessing: Preprocessing, device: str, batch_size: int, workers: int | None):
    from torch.utils.data import DataLoader

    return DataLoader(
        ImageFiles(paths, preprocessing),  # type: ignore[arg-type]  # a map-style dataset by protocol: torch is imported lazily
        batch_size=preprocessing.images_per_batch(batch_size),
        num_workers=default_workers(device) if workers is None else workers,
        pin_memory=device == "cuda",
    )


def network_batches(extractor, loader, preprocessing: Preprocessing, device: str, precision: str, nodes: dict[str, str],
                    reduce: Reduction):
    """Yields ({layer key: float32 array}, readable mask, seconds spent waiting for the loader) per batch of
    ``loader`` (`ImageFiles` batches, normalised here by ``preprocessing`` on the device)."""
    import torch

    fp32_means_fp32(device, precision)
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        batch = next(batches, None)
        waited = time.perf_counter() - tick
        if batch is None:
            return
        images, ok = batch  # B×V×C×H×W: each image's views (`Preprocessing.views`)
        count, views = images.shape[:2]
        # The modes are entered per batch, never held across a yield: the caller may train on the output.
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            inputs = preprocessing.normalise(images.flatten(0, 1).to(device, non_blocking=True))
            outputs = extractor(inputs.contiguous(memory_format=torch.channels_last))
            arrays = {lk: reduce(outputs[node]).float().unflatten(0, (count, views)).mean(1).cpu().numpy()
                      for lk, node in nodes.items()}
        yield arrays, ok.numpy().astype(bool), waited
