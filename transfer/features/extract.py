"""The local engine: images through a backbone into the feature cache, batched and resumable."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from transfer.core.choices import Engine, Precision
from transfer.core.console import console, progress_bar, warn
from transfer.core.device import resolve_device, resolve_precision
from transfer.core.errors import DamagedFile, UserError
from transfer.core.memory import KeptHeap, keep_freed_memory, peak_rss_mb, release_freed_memory
from transfer.data.datasets import SPLITS, ImageDataset, Sample
from transfer.features.backbones import BackboneSpec, Weights, build_extractor, weights_id
from transfer.features.cache import (
    ExtractionKey,
    FeatureCache,
    FeatureFile,
    LayerFeatures,
    complete_layers,
    extraction_summary,
    read_features,
    recover,
)
from transfer.features.forward import make_loader, network_batches
from transfer.features.registry import get_backbone
from transfer.features.runtime import ForwardSetting, RuntimeChoice, forward_for
from transfer.features.spec import FeatureSpec, RunOptions


@dataclass(frozen=True)
class Resolved:
    spec: BackboneSpec
    weights: Weights
    key: ExtractionKey
    layer_keys: dict[str, str]  # layer key -> FX node
    device: str
    path: Path


def resolve(features: FeatureSpec, cache_dir: Path, device: str = "auto") -> Resolved:
    """The backbone, weights, cache key and cache file of a feature selection (the same for every data set)."""
    spec = get_backbone(features.backbone)
    weights = Weights.parse(features.weights)
    preprocessing = replace(spec.pretrained.preprocessing, color=features.color, views=features.views)
    if features.image_size is not None:
        ratio = spec.pretrained.preprocessing.resize / spec.pretrained.preprocessing.crop
        preprocessing = replace(preprocessing, crop=features.image_size, resize=round(features.image_size * ratio))
    device = resolve_device(device)
    key = ExtractionKey(
        backbone=spec.name,
        weights=weights_id(spec, weights),
        pooling=features.pooling,
        precision=resolve_precision(features.precision, device),
        preprocessing=preprocessing,
    )
    return Resolved(spec, weights, key, features.layer_nodes(), device, FeatureCache(cache_dir).path_for(key))


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
    runtime: RuntimeChoice | None = None  # what ran the forward pass; None: nothing to extract

    @property
    def cached(self) -> bool:
        return self.images == 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


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
            streams, outcome.runtime = source([([dataset.path(s) for s in samples], nodes) for _, samples, nodes in segments])
            store.add_runtime(outcome.runtime)
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
        from transfer.features.ray_engine import ray_segments, ray_session

        with ray_session(options.address):
            yield lambda segments: ray_segments(segments, features, resolved.key, options, _setting(resolved, options))
        return

    if resolved.device == "cpu":
        keep_freed_memory()
    extractor = build_extractor(resolved.spec, resolved.weights, features.pooling, list(resolved.layer_keys.values()),
                                resolved.device)
    def batches(paths: list[Path], nodes: dict[str, str], forward):
        # The loader's workers are forked from this process and would keep its free heap pages resident
        # for as long as they live: hand them back first.
        release_freed_memory()
        loader = make_loader(paths, resolved.key.preprocessing, resolved.device, options.batch_size, options.workers)
        yield from network_batches(forward, loader, resolved.key.preprocessing, resolved.device, resolved.key.precision, nodes, features.reduction())

    def source(segments):
        forward, choice = _forward_for(extractor, resolved, options, sum(len(paths) for paths, _ in segments))
        return [batches(paths, nodes, forward) for paths, nodes in segments], choice  # each starts when iterated

    yield source


def _setting(resolved: Resolved, options: RunOptions) -> ForwardSetting:
    return ForwardSetting(backbone=resolved.spec.name, nodes=tuple(resolved.layer_keys.values()),
                          preprocessing=resolved.key.preprocessing, precision=resolved.key.precision,
                          device=resolved.device, batch_size=options.batch_size, memo_folder=resolved.path.parent)


def _forward_for(extractor, resolved: Resolved, options: RunOptions, images: int):
    return forward_for(extractor, _setting(resolved, options), options.runtime, images)


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

    from transfer.core.paths import default_cache_dir

    defaults = FeatureSpec()
    parts = ["transfer extract", f"--data {shlex.quote(str(dataset.root))}", f"--layer {','.join(layers)}"]
    if Path(cache_dir).resolve() != default_cache_dir().resolve():
        parts.append(f"--cache-dir {shlex.quote(str(cache_dir))}")
    for name in ("backbone", "weights", "spatial", "tokens", "pooling", "precision", "image_size", "views"):
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
