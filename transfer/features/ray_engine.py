"""Extraction on Ray Data (`--engine ray`): the same network code as the local engine, on a cluster.

The images still to extract are cut into the same batches as the local engine would use; Ray Data maps
them over actors that each build the network once and run the local engine's own code
(`forward.network_batches`) on their batches. Batches stream back in order, so the caller writes
them into the same HDF5 cache file exactly as a local run does: same key, same rows, resumable by
either engine. `ray.init()` without an address starts a local cluster (nothing to set up); with
``--address auto`` or ``RAY_ADDRESS`` it joins a running one, whose nodes need this package installed
and the image folder at the same path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.core.errors import UserError

if TYPE_CHECKING:
    from transfer.core.choices import Runtime
    from transfer.features.cache import ExtractionKey
    from transfer.features.runtime import ForwardSetting, RuntimeChoice
    from transfer.features.spec import FeatureSpec, RunOptions

RAY_HINT = "install the optional extra: pip install 'transfer[ray]' (ray[data])"


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for the duration of one extraction: a local cluster started here is shut down after it
    (also on Ctrl-C); a cluster this process is already connected to is left running."""
    try:
        import ray
    except ImportError as error:
        raise UserError(f"--engine ray needs Ray: {RAY_HINT}") from error
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)
        except ConnectionError as error:
            raise UserError(f"could not reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} "
                            f"({error}); start it with `ray start --head`, or leave --address out for a local one") from error
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _actor_class(features: FeatureSpec, key: ExtractionKey, nodes: dict[str, str], setting: ForwardSetting,
                 runtime: Runtime, images: int) -> type:
    """The Ray Data callable class, with what it runs built in: no constructor arguments, so nothing
    that an actor restart could lose sits in the object store."""

    class NetworkActor:
        """One per Ray actor: builds the network once, then turns a batch of image paths into features."""

        def __init__(self) -> None:
            from transfer.features.backbones import Weights, build_extractor
            from transfer.features.registry import get_backbone
            from transfer.features.runtime import forward_for

            extractor = build_extractor(get_backbone(features.backbone), Weights.parse(features.weights),
                                        features.pooling, list(nodes.values()), setting.device)
            self.forward, _ = forward_for(extractor, setting, runtime, images)

        def __call__(self, batch: dict) -> dict:
            from torch.utils.data import default_collate

            from transfer.features.forward import ImageFiles, network_batches

            files = ImageFiles([Path(p) for p in json.loads(batch["paths"][0])], key.preprocessing)
            images = default_collate([files[i] for i in range(len(files))])  # as the local DataLoader does
            ((arrays, ok, _),) = network_batches(self.forward, [images], key.preprocessing, setting.device, key.precision, nodes,
                                                 features.reduction())
            return {"ok": ok[None], **{f"layer{i}": arrays[layer][None] for i, layer in enumerate(nodes)}}

    return NetworkActor


def default_actors(cpus_per_actor: float) -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))


def ray_segments(segments: list[tuple[list[Path], dict[str, str]]], features: FeatureSpec, key: ExtractionKey,
                 options: RunOptions, setting: ForwardSetting) -> tuple[list[Iterator], RuntimeChoice]:
    """For each segment (image paths, {layer key: node}): an iterator of ({layer key: array}, readable mask, 0)
    per batch, in order, like the local engine's (there is no local data loader to wait for: the driver's
    waiting is the actors' work). One Ray Data run over all segments, so the actors start once; the
    iterators share its stream and must be consumed one after the other. Each actor runs the forward pass
    that the measured speeds choose for its share of the images (`runtime.remembered`): actors do not measure."""
    import itertools
    from dataclasses import replace

    from transfer.core.choices import Runtime
    from transfer.features.runtime import RuntimeChoice, remembered

    nodes = {key: node for _, segment_nodes in segments for key, node in segment_nodes.items()}
    size = key.preprocessing.images_per_batch(options.batch_size)
    counts = [len(range(0, len(paths), size)) for paths, _ in segments]
    setting = replace(setting, device="cuda" if options.gpus_per_actor > 0 else "cpu")
    share = -(-sum(len(paths) for paths, _ in segments) // (options.actors or 1))
    runtime = remembered(setting, share) if options.runtime == Runtime.AUTO else options.runtime
    choice = RuntimeChoice(runtime=runtime, reason="on each Ray actor, " + (
        "asked for" if options.runtime != Runtime.AUTO else "as measured earlier for this configuration (actors do not measure)"))
    stream = _ray_batches([paths for paths, _ in segments], size, nodes, features, key, options, setting, runtime, share)
    return [((({k: arrays[k] for k in segment_nodes}, ok, waited) for arrays, ok, waited in itertools.islice(stream, count)))
            for count, (_, segment_nodes) in zip(counts, segments)], choice


def _ray_batches(segments: list[list[Path]], size: int, nodes: dict[str, str], features: FeatureSpec,
                 key: ExtractionKey, options: RunOptions, setting: ForwardSetting, runtime: Runtime, images: int):
    """Every segment cut into batches of ``size`` images, as the local engine cuts it, mapped over the actors, in order."""
    import ray
    import ray.data

    for handler in logging.getLogger("ray.data").handlers:  # its INFO lines would bury our progress bar;
        if "File" not in type(handler).__name__:  # all of it still goes to Ray's session log (ray-data.log)
            handler.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows are written in order: resumable like a local run
    context.enable_progress_bars = False  # the caller draws its own
    batches = [paths[i : i + size] for paths in segments for i in range(0, len(paths), size)]
    if not batches:
        return
    gpus = options.gpus_per_actor
    cpus = 0 if gpus > 0 else 1  # on a CPU actor torch then runs one thread; the actors are the parallelism
    items = [{"paths": json.dumps([str(p) for p in batch])} for batch in batches]
    pool = ray.data.ActorPoolStrategy(size=min(options.actors or default_actors(max(cpus, 1)), len(batches)))
    mapped = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _actor_class(features, key, nodes, setting, runtime, images), batch_size=1, batch_format="numpy",
        compute=pool, num_cpus=cpus, num_gpus=gpus)  # Ray Data's defaults restart a dead actor and rerun its batch
    for out in mapped.iter_batches(batch_size=1, batch_format="numpy"):
        yield {key: out[f"layer{i}"][0] for i, key in enumerate(nodes)}, out["ok"][0].astype(bool), 0.0
