"""`transfer inspect`: what a pretrained network sees in a few images — its own class predictions, and
the feature maps of one layer drawn beside the image as the network received it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from transfer.core.choices import Pooling, Runtime
from transfer.core.errors import UserError
from transfer.core.files import atomic_path, safe_name
from transfer.core.paths import INSPECT_DIR
from transfer.data.images import UnreadableImage, image_paths, read_image
from transfer.features.backbones import (
    BackboneSpec,
    Preprocessing,
    Weights,
    build_extractor,
)
from transfer.features.registry import get_backbone
from transfer.features.runtime import ForwardSetting, forward_for
from transfer.runs.predict import Prediction

MAP_ORDERS = ("index", "activation")
DEFAULT_MAP_COUNT = 64
MAX_MAP_COUNT = 256  # with the grid's columns growing as the square root, a figure stays within about 2,200 px


@dataclass
class Inspection(Prediction):
    """A prediction (``scores`` are the network's own class probabilities) and the figure of its maps."""

    maps_png: Path | None = None


def _check(spec: BackboneSpec, maps: str, top: int, order: str, count: int) -> None:
    layer = spec.layer(maps)
    if not layer.spatial:
        spatial = [name for name, named in spec.taps.layers.items() if named.spatial]
        raise UserError(f"--maps {maps}: {spec.name}'s {maps} is {'tokens' if layer.tokens else 'a vector'}, not maps "
                        f"(channels × height × width); spatial layers: {', '.join(spatial) or 'see transfer layers --all'}")
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    if order not in MAP_ORDERS:
        raise UserError(f"--order must be one of {', '.join(MAP_ORDERS)}, got {order!r}")
    if not 1 <= count <= MAX_MAP_COUNT:
        raise UserError(f"--count must be 1 to {MAX_MAP_COUNT} (the most activated maps are drawn), got {count}")


def inspect_images(inputs: list[Path], backbone: str = "vgg16", weights: str = "imagenet", top: int = 5,
                   maps: str | None = None, out: Path | None = INSPECT_DIR, color: bool = False,
                   order: str = "index", device: str = "auto", count: int = DEFAULT_MAP_COUNT,
                   runtime: Runtime = Runtime.AUTO) -> list[Inspection]:
    """The backbone's top-``top`` classes per image; with ``out``, a PNG per image of layer ``maps``' ``count``
    most activated maps."""
    import torch

    from transfer.core.device import resolve_device

    spec = get_backbone(backbone)
    maps = maps or spec.taps.first_maps
    _check(spec, maps, top, order, count)
    paths = image_paths(inputs)
    device = resolve_device(device)
    preprocessing = replace(spec.pretrained.preprocessing, color=color)
    nodes = {"maps": spec.layer(maps).node, "logits": spec.taps.layers[spec.taps.logits].node}
    extractor = build_extractor(spec, Weights.parse(weights), Pooling.MAX, list(nodes.values()), device)
    # One image at a time (each is drawn as soon as it is read), in fp32 as the figures were always drawn.
    setting = ForwardSetting(backbone=spec.name, nodes=tuple(nodes.values()), preprocessing=preprocessing, precision="fp32",
                             device=device, batch_size=1, memo_folder=None)
    forward, _ = forward_for(extractor, setting, runtime, len(paths))
    names = spec.pretrained.class_names()
    transform = preprocessing.transform()
    found = []
    for index, path in enumerate(paths):
        try:
            image = transform(read_image(path, color))
        except UnreadableImage as error:
            found.append(Inspection(path=str(path), classes=[], scores=[], error=str(error)))
            continue
        with torch.inference_mode():
            outputs = forward(image[None].to(device).contiguous(memory_format=torch.channels_last))
        probabilities = torch.softmax(outputs[nodes["logits"]][0].float(), dim=0).cpu()
        best = probabilities.topk(min(top, len(names)))
        drawn = None
        if out is not None:
            drawn = draw_maps(image, preprocessing, outputs[nodes["maps"]][0].float().cpu().numpy(),
                              out / f"{index:02d}-{safe_name(f'{path.stem}-{spec.name}-{maps}')}.png",
                              f"{path.name}: {spec.name} {maps}", order, count)
        found.append(Inspection(path=str(path), classes=[names[i] for i in best.indices.tolist()],
                                scores=best.values.tolist(), maps_png=drawn))
    return found


def network_view(image, preprocessing: Preprocessing) -> np.ndarray:
    """The preprocessed tensor turned back into an RGB picture (H, W, 3) in [0, 1]: what the network got."""
    mean = np.array(preprocessing.mean)[:, None, None]
    std = np.array(preprocessing.std)[:, None, None]
    return np.clip(image.numpy() * std + mean, 0, 1).transpose(1, 2, 0)


def map_order(maps: np.ndarray, order: str, count: int | None = None) -> list[int]:
    """The ``count`` most activated (highest mean) channels (None: all), in drawing order: as numbered, or
    the most activated first."""
    ranked = np.argsort(-maps.reshape(len(maps), -1).mean(axis=1), kind="stable")[:count].tolist()
    return ranked if order == "activation" else sorted(ranked)


def draw_maps(image, preprocessing: Preprocessing, maps: np.ndarray, path: Path, title: str, order: str = "index",
              count: int | None = None) -> Path:
    """One PNG: the input as the network saw it, then the ``count`` most activated channels of ``maps``
    (C, H, W) with their indices, all on one colour scale (so a bright map is a strongly activated one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):  # file names are text, not mathtext
        figure = maps_figure(image, preprocessing, maps, title, order, count)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial:
            figure.savefig(partial, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def maps_figure(image, preprocessing: Preprocessing, maps: np.ndarray, title: str, order: str = "index",
                count: int | None = None):
    """The figure `draw_maps` saves: axes for the input view, one per drawn channel (titled #index), a colour
    bar; at least 8 columns, more for many maps, so that the figure stays about as wide as high."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    channels = map_order(maps, order, count)
    columns = max(8, int(np.ceil(np.sqrt(len(channels)))))
    rows = int(np.ceil(len(channels) / columns))
    low, high = float(maps.min()), float(maps.max())
    figure = plt.figure(figsize=(3.2 + 1.3 * columns, max(3.4, 1.35 * rows + 0.8)))
    grid = GridSpec(rows, columns + 3, figure=figure, width_ratios=[2.4, 0.2] + [1] * columns + [0.12])
    view = figure.add_subplot(grid[: min(rows, 3), 0])
    view.imshow(network_view(image, preprocessing))
    view.set_title(f"input as the network saw it\n{image.shape[2]}×{image.shape[1]}", fontsize=8)
    view.axis("off")
    for slot, channel in enumerate(channels):
        axis = figure.add_subplot(grid[slot // columns, 2 + slot % columns])
        drawn = axis.imshow(maps[channel], cmap="viridis", vmin=low, vmax=high)
        axis.set_title(f"#{channel}", fontsize=7, pad=2)
        axis.axis("off")
    figure.colorbar(drawn, cax=figure.add_subplot(grid[:, -1]), label="activation (one scale for all maps)")
    ordering = "most activated first" if order == "activation" else "by index"
    shown = f"{len(channels)} maps" if len(channels) == len(maps) else f"the {len(channels)} most activated of {len(maps)} maps"
    figure.suptitle(f"{title}: {shown} of {maps.shape[1]}×{maps.shape[2]}, {ordering}", fontsize=10)
    return figure
