"""Images through a backbone into the feature cache: batched, resumable, CPU or CUDA, fp32 or bf16."""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .backbones import (
    BackboneSpec,
    Preprocessing,
    Weights,
    build_extractor,
    check_layers,
    check_pooling,
    get_backbone,
    weights_id,
)
from .cache import (
    ExtractionKey,
    FeatureCache,
    FeatureFile,
    LayerFeatures,
    complete_layers,
    extraction_summary,
    layer_key,
    read_features,
    recover,
)
from .choices import Device, Engine, Pooling, Precision, Spatial, View
from .config import choice, require
from .console import console, progress_bar, warn
from .datasets import SPLITS, ImageDataset, Sample
from .errors import DamagedFile, UserError
from .images import UnreadableImage, read_image
from .memory import KeptHeap, keep_freed_memory, peak_rss_mb, release_freed_memory


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Which features: the part of a command line that selects an extraction and its layers. Every rule
    of a selection is checked here, once, on construction."""

    backbone: str = "vgg16"
    weights: str = "imagenet"  # imagenet, random or a state_dict file (checked where it is loaded)
    layers: tuple[str, ...] = ()  # empty: the backbone's default layer (its pooled features)
    spatial: Spatial = Spatial.FLATTEN
    pooling: Pooling = Pooling.MAX
    precision: Precision = Precision.AUTO
    color: bool = False
    image_size: int | None = None  # centre-crop size; None: the backbone's own (224)
    views: View = View.CENTRE  # test-time augmentation: the features are the mean over these views

    def __post_init__(self) -> None:
        spec = get_backbone(self.backbone)
        object.__setattr__(self, "layers", tuple(self.layers) or (spec.default_layer,))
        object.__setattr__(self, "spatial", choice(Spatial, self.spatial, "spatial"))
        object.__setattr__(self, "pooling", choice(Pooling, self.pooling, "pooling"))
        object.__setattr__(self, "precision", choice(Precision, self.precision, "precision"))
        object.__setattr__(self, "views", choice(View, self.views, "views"))
        check_layers(spec, self.layers)
        check_pooling(spec, self.pooling)
        require(self.image_size is None or self.image_size >= 32, "image_size",
                f"image_size must be at least 32, got {self.image_size}")


def distinguishing(features: dict) -> dict:
    """The fields of a `FeatureSpec` (as a dict, e.g. a stored run's) that set its features apart from the
    backbone's plain ones, where they differ from their defaults: what stage names and report labels show."""
    defaults = FeatureSpec()
    return {name: features[name] for name in ("views", "image_size", "color")
            if features.get(name, getattr(defaults, name)) != getattr(defaults, name)}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run an extraction; none of this changes the features."""

    device: Device = Device.AUTO
    batch_size: int = 32
    workers: int | None = None  # None: a default that suits the device and core count
    strict: bool = False
    progress: bool = True
    engine: Engine = Engine.LOCAL
    address: str | None = None  # the Ray cluster to join; None: $RAY_ADDRESS, else a local one
    actors: int | None = None  # Ray actors; None: one per CPU of the cluster
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", choice(Device, self.device, "device"))
        object.__setattr__(self, "engine", choice(Engine, self.engine, "engine"))
        require(self.batch_size >= 1, "batch_size", f"batch_size must be at least 1, got {self.batch_size}")
        check_workers(self.workers)
        require(self.actors is None or self.actors >= 1, "actors", f"actors must be at least 1, got {self.actors}")
        require(self.gpus_per_actor >= 0, "gpus_per_actor",
                f"gpus_per_actor must be 0 (CPU actors) or more, got {self.gpus_per_actor}")
        require(self.engine == Engine.RAY or not (self.address or self.actors or self.gpus_per_actor), "engine",
                "address, actors and gpus_per_actor are for the ray engine")


def check_workers(workers: int | None) -> None:
    require(workers is None or workers >= 0, "workers",
            f"workers must be 0 (load images in the main process) or more, got {workers}")


@dataclass(frozen=True)
class Resolved:
    spec: BackboneSpec
    weights: Weights
    key: ExtractionKey
    layer_keys: dict[str, str]  # layer key -> FX node
    device: str
    path: Path


def resolve_device(device: Device | str) -> str:
    import torch

    device = choice(Device, device, "device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)


def native_bf16(device: str) -> bool:
    """Whether the hardware computes bf16 itself (CUDA, or CPUs with AVX512-BF16/AMX) rather than in software."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` is bf16 where the hardware computes it natively, else fp32. An explicit bf16 where it is
    computed in software is kept, with a warning (once) of how much slower it measured."""
    if precision == Precision.AUTO:
        return "bf16" if native_bf16(device) else "fp32"
    if precision == Precision.BF16 and device == "cpu" and not native_bf16(device):
        _warn_software_bf16()
    return str(precision)


@functools.cache
def _warn_software_bf16() -> None:
    warn(f"this CPU has no native bf16 (AVX512-BF16 or AMX): --precision bf16 is computed in software, "
         f"{software_bf16_slowdown():.0f}× slower than fp32 on a test convolution just now; --precision auto "
         f"(fp32 here) gives the same features far faster")


def software_bf16_slowdown() -> float:
    """bf16 time over fp32 time of one small convolution on this CPU (a few milliseconds in fp32)."""
    import torch

    def seconds(dtype) -> float:
        image, weight = torch.ones(1, 32, 56, 56, dtype=dtype), torch.ones(32, 32, 3, 3, dtype=dtype)
        torch.conv2d(image, weight, padding=1)  # warm-up
        begun = time.perf_counter()
        for _ in range(3):
            torch.conv2d(image, weight, padding=1)
        return time.perf_counter() - begun

    with torch.inference_mode():
        return seconds(torch.bfloat16) / max(seconds(torch.float32), 1e-9)


def resolve(features: FeatureSpec, cache_dir: Path, device: str = "auto") -> Resolved:
    """The backbone, weights, cache key and cache file of a feature selection (the same for every data set)."""
    spec = get_backbone(features.backbone)
    weights = Weights.parse(features.weights)
    preprocessing = replace(spec.preprocessing, color=features.color, views=features.views)
    if features.image_size is not None:
        ratio = spec.preprocessing.resize / spec.preprocessing.crop
        preprocessing = replace(preprocessing, crop=features.image_size, resize=round(features.image_size * ratio))
    device = resolve_device(device)
    key = ExtractionKey(
        backbone=spec.name,
        weights=weights_id(spec, weights),
        pooling=features.pooling,
        precision=resolve_precision(features.precision, device),
        preprocessing=preprocessing,
    )
    layer_keys = {
        layer_key(name, features.spatial, spec.layers[name].spatial): spec.layers[name].node
        for name in features.layers
    }
    return Resolved(spec, weights, key, layer_keys, device, FeatureCache(cache_dir).path_for(key))


@dataclass
class ExtractionOutcome:
    path: Path
    shapes: dict[str, dict[str, tuple[int, int]]]  # split -> layer key -> (rows, dims)
    images: int = 0  # images passed through the network by this call
    seconds: float = 0.0
    loader_wait_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    skipped: list[str] = field(default_factory=list)
    engine: str = "local"

    @property
    def cached(self) -> bool:
        return self.images == 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def default_workers(device: str) -> int:
    cores = os.cpu_count() or 1
    # On a CPU the network wants every core; one loader process keeps JPEG decoding overlapped.
    return min(8, cores) if device == "cuda" else (1 if cores <= 4 else 2)


def _reduce(output, spatial: str):
    if output.dim() == 2:
        return output
    if spatial == "avg":
        return output.mean(dim=(2, 3))
    if spatial == "max":
        return output.amax(dim=(2, 3))
    return output.flatten(1)


class _ImageFiles:
    """Map-style dataset over image paths; an unreadable image yields zeros and ok=False."""

    def __init__(self, paths: list[Path], preprocessing: Preprocessing) -> None:
        self.paths = paths
        self.preprocessing = preprocessing
        self.transform = preprocessing.views_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        try:
            return self.transform(read_image(self.paths[index], self.preprocessing.color)), True
        except UnreadableImage:
            size = self.preprocessing.crop
            return torch.zeros(View(self.preprocessing.views).images, 3, size, size), False


def extract(
    dataset: ImageDataset,
    features: FeatureSpec,
    cache_dir: Path,
    options: RunOptions = RunOptions(),
    on_batch=None,
) -> ExtractionOutcome:
    """Extract the requested layers of every image not yet in the cache; a no-op when all are there.

    ``on_batch(rows_written)`` is called after each batch is safely on disk (tests use it to
    interrupt a run midway).
    """
    resolved = resolve(features, cache_dir, key_device(options))
    outcome = ExtractionOutcome(resolved.path, {}, engine=options.engine)
    try:
        done = complete_layers(resolved.path, dataset) if resolved.path.exists() else []
    except DamagedFile:  # FeatureFile moves it aside and starts afresh
        done = []
    if any(lk not in done for lk in resolved.layer_keys):
        with _batch_source(resolved, features, options) as source, FeatureFile(resolved.path, resolved.key) as store:
            segments = _segments(dataset, resolved, store)
            streams = source([([dataset.path(s) for s in samples], nodes) for _, samples, nodes in segments])
            for (rows, samples, nodes), batches in zip(segments, streams):
                _extract_rows(rows, samples, nodes, resolved, options, store, batches, outcome, on_batch)
    outcome.shapes, outcome.skipped = extraction_summary(resolved.path, list(resolved.layer_keys), dataset)
    outcome.peak_rss_mb = peak_rss_mb()
    return outcome


def _segments(dataset: ImageDataset, resolved: Resolved, store: FeatureFile) -> list[tuple[np.ndarray, list, dict[str, str]]]:
    """What is left to compute: (rows, one sample per row, {layer key: node}) per set of missing layers.
    Each distinct image content is one row, computed once however often and wherever it is listed."""
    samples = [s for split in SPLITS for s in dataset.samples(split)]
    rows = store.rows_for([dataset.file_digests[s.relpath] for s in samples])
    first: dict[int, Sample] = {}
    for row, sample in zip(rows.tolist(), samples):
        first.setdefault(row, sample)
    done = {lk: store.done(lk) for lk in resolved.layer_keys}
    todo: dict[tuple[str, ...], list[int]] = {}
    for row in sorted(first):
        missing = tuple(lk for lk in resolved.layer_keys if not done[lk][row])
        if missing:
            todo.setdefault(missing, []).append(row)
    cached = len(first) - len({row for group in todo.values() for row in group})
    if cached and todo:
        console.print(f"{cached} of {len(first)} distinct images already cached; extracting the rest")
    return [(np.array(group), [first[row] for row in group], {lk: resolved.layer_keys[lk] for lk in missing})
            for missing, group in todo.items()]


def key_device(options: RunOptions) -> str:
    """The device whose precision ``auto`` resolves to: Ray's GPU actors count as CUDA, CPU actors as a CPU."""
    if options.engine == "ray":
        return "cpu" if options.gpus_per_actor == 0 else "auto"
    return options.device


@contextmanager
def _batch_source(resolved: Resolved, features: FeatureSpec, options: RunOptions):
    """Yields ``source(segments)``: for each segment (image paths, {layer key: node}), an iterator of
    (arrays, readable mask, seconds waited) per batch, consumed one segment after the other; from this
    process (local) or from Ray actors (one actor pool for all segments). Locally the network is built
    before any cache file is touched, so a weights failure leaves nothing behind."""
    if options.engine == "ray":
        from .distributed import ray_segments, ray_session

        with ray_session(options.address):
            yield lambda segments: ray_segments(segments, features, resolved.key, options)
        return

    if resolved.device == "cpu":
        keep_freed_memory()
    extractor = build_extractor(resolved.spec, resolved.weights, features.pooling, list(resolved.layer_keys.values()),
                                resolved.device)

    def batches(paths: list[Path], nodes: dict[str, str]):
        # The loader's workers are forked from this process and would keep its free heap pages resident
        # for as long as they live: hand them back first.
        release_freed_memory()
        loader = make_loader(paths, resolved.key.preprocessing, resolved.device, options.batch_size, options.workers)
        yield from network_batches(extractor, loader, resolved.device, resolved.key.precision, nodes, features.spatial)

    yield lambda segments: [batches(paths, nodes) for paths, nodes in segments]  # each starts when iterated


def make_loader(paths: list[Path], preprocessing: Preprocessing, device: str, batch_size: int, workers: int | None):
    from torch.utils.data import DataLoader

    return DataLoader(
        _ImageFiles(paths, preprocessing),  # type: ignore[arg-type]  # a map-style dataset by protocol: torch is imported lazily
        batch_size=preprocessing.images_per_batch(batch_size),
        num_workers=default_workers(device) if workers is None else workers,
        pin_memory=device == "cuda",
    )


def network_batches(extractor, loader, device: str, precision: str, nodes: dict[str, str], spatial: str):
    """Yields ({layer key: float32 array}, readable mask, seconds spent waiting for the loader) per batch."""
    import torch

    if device == "cuda":  # fp32 means fp32: no TF32 products (cuDNN allows them by default)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
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
            outputs = extractor(images.flatten(0, 1).to(device, non_blocking=True, memory_format=torch.channels_last))
            arrays = {lk: _reduce(outputs[node], spatial).float().unflatten(0, (count, views)).mean(1).cpu().numpy()
                      for lk, node in nodes.items()}
        yield arrays, ok.numpy().astype(bool), waited


def _extract_rows(rows, samples, nodes, resolved, options, store, batches, outcome, on_batch):
    done = 0
    begun = time.perf_counter()
    waited = 0.0
    heap = KeptHeap() if resolved.device == "cpu" and options.engine == "local" else None
    try:
        with progress_bar(len(rows), resolved.spec.name, enabled=options.progress) as advance:
            for arrays, ok, wait in batches:
                waited += wait
                if not ok.all():
                    bad = [samples[done + i].relpath for i in np.flatnonzero(~ok)]
                    if options.strict:
                        raise UserError(f"unreadable image(s) (--strict): {', '.join(bad)}")
                    for relpath in bad:
                        warn(f"skipping unreadable image {relpath}")
                store.write_batch(rows[done:done + len(ok)], arrays, ok)
                done += len(ok)
                advance(len(ok))
                if heap is not None:
                    heap.after_batch()
                if on_batch is not None:
                    on_batch(done)
    finally:
        seconds = time.perf_counter() - begun
        device = resolved.device if options.engine == Engine.LOCAL else f"{'cuda' if options.gpus_per_actor else 'cpu'} (Ray)"
        store.add_timing(done, seconds, waited, device)
        outcome.images += done
        outcome.seconds += seconds
        outcome.loader_wait_seconds += waited


def extract_command(dataset: ImageDataset, features: FeatureSpec, layers: list[str], cache_dir: Path) -> str:
    """The `transfer extract` command line that produces these features, in this cache."""
    import shlex

    from .paths import default_cache_dir

    defaults = FeatureSpec()
    parts = ["transfer extract", f"--data {shlex.quote(str(dataset.root))}", f"--layer {','.join(layers)}"]
    if Path(cache_dir).resolve() != default_cache_dir().resolve():
        parts.append(f"--cache-dir {shlex.quote(str(cache_dir))}")
    for name in ("backbone", "weights", "spatial", "pooling", "precision", "image_size", "views"):
        value = getattr(features, name)
        if value != getattr(defaults, name):
            parts.append(f"--{name.replace('_', '-')} {value}")
    if features.color:
        parts.append("--color")
    return " ".join(parts)


def cached_features(dataset: ImageDataset, features: FeatureSpec, cache_dir: Path) -> Resolved:
    """The cache file holding every requested layer for ``dataset``; a layer not (completely) extracted is
    an error naming the command. Precision ``auto`` takes whichever precision the extraction chose (it
    depends on the device that extracted), so the key a reader looks for never depends on the reader."""
    precisions = [features.precision] if features.precision != "auto" else [Precision.AUTO, Precision.BF16, Precision.FP32]
    candidates = [resolve(replace(features, precision=p), cache_dir) for p in precisions]
    missing: list[str] = []
    for resolved in reversed(candidates):  # the first candidate last: its missing layers are reported
        try:
            done = complete_layers(resolved.path, dataset) if resolved.path.exists() else []
        except DamagedFile:
            if resolved is candidates[0]:
                raise
            continue
        missing = [name for name, lk in zip(features.layers, resolved.layer_keys) if lk not in done]
        if not missing:
            return resolved
    raise UserError(
        f"no cached features for {', '.join(missing)} of this selection (looked for {candidates[0].path}). "
        f"Make them with:\n  {extract_command(dataset, features, missing, cache_dir)}"
    )


def load_layer(dataset: ImageDataset, features: FeatureSpec, cache_dir: Path, layer: str,
               options: RunOptions = RunOptions()) -> tuple[Resolved, LayerFeatures]:
    """One cached layer's features (``layer``: a layer key of ``features``). Features never extracted are
    an error naming the command; a damaged cache file is moved aside and extracted again."""

    def read() -> tuple[Resolved, LayerFeatures]:
        resolved = cached_features(dataset, features, cache_dir)
        return resolved, read_features(resolved.path, layer, dataset)

    try:
        return read()
    except DamagedFile as error:
        recover(error)
    extract(dataset, features, cache_dir, options)
    return read()
