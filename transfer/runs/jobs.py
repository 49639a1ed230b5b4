"""Study steps that join the pieces: features → classifier → saved model → results store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from transfer.classifiers.heads import EndToEnd, HeadSpec, attach_head, train_end_to_end, train_head
from transfer.classifiers.probes import KnnModel, LinearSearch, Search, search_of
from transfer.classifiers.settings import COMBINED, DEFAULT_NORMS, DEFAULT_PROBES, GridConfig, KnnGrid
from transfer.classifiers.svm import GridResult, check_training_labels, plain_svm, redraw_splits, side_by_side
from transfer.classifiers.training import Compute, TrainConfig, TrainingResult, check_validation_split
from transfer.core.archive import SKOPS_SUFFIX, state_arrays
from transfer.core.choices import Method, Norm, Probe
from transfer.core.device import resolve_device
from transfer.core.errors import UserError
from transfer.core.files import safe_name
from transfer.core.keys import KeyKind, content_key
from transfer.core.paths import CacheFolder
from transfer.data.datasets import ImageDataset
from transfer.descriptors.bow import bow_features
from transfer.descriptors.fisher import fisher_features
from transfer.descriptors.settings import BowConfig, FisherConfig
from transfer.features.cache import extraction_timing
from transfer.features.extract import extract, load_layer, resolve
from transfer.features.spec import FeatureSpec, RunOptions, check_combination, check_parts
from transfer.runs.labels import BowLabel, FisherLabel
from transfer.runs.models import (
    BowModel,
    Extraction,
    FisherModel,
    HeadModel,
    ModelFile,
    NetworkModel,
    ProbeModel,
    SvmModel,
    save_model,
)
from transfer.runs.store import ResultsStore, RunRecord, library_versions

if TYPE_CHECKING:
    from transfer.classifiers.scratch import ImageTensors, ScratchConfig, ScratchResult


@dataclass
class GridOutcome:
    name: str  # layer, or the BoW variant
    result: GridResult  # on the dataset's own split
    run_id: int
    model_path: Path
    split_accuracies: list[float] | None = None  # with --splits K > 1
    timings: dict | None = None
    candidates_cv: dict[str, float] | None = None  # with several normalisations: each one's best CV accuracy
    chosen_candidate: str | None = None  # and the one CV chose
    probe: Probe = Probe.SVM  # what classified (BoW and Fisher vectors: their SVM)

    @property
    def mean_std(self) -> tuple[float, float | None]:
        """Test accuracy over the re-drawn splits, or the single split's (std None)."""
        if not self.split_accuracies:
            return self.result.test_accuracy, None
        return float(np.mean(self.split_accuracies)), float(np.std(self.split_accuracies))


def _grid_fields(grid: GridConfig) -> dict:
    return {"c_grid": list(grid.c_grid), "cv": grid.cv, "seed": grid.seed, "splits": grid.splits}


def svm_key(dataset_fingerprint: str, features_key: str, layer_key: str, norms: tuple[Norm, ...], grid: GridConfig) -> str:
    """Content key of an SVM run: same key, same result (a pipeline skips a run whose key is stored).
    The normalisations CV chooses among are one field, "l2,power" (one of them: its name alone)."""
    return content_key(KeyKind.SVM, dataset=dataset_fingerprint, features=features_key, layer=layer_key,
                       norm=",".join(norms), **_grid_fields(grid))


def parts_svm_key(dataset_fingerprint: str, extractions: list[tuple[str, list[str]]], norms: tuple[Norm, ...],
                  grid: GridConfig) -> str:
    """`svm_key` of layers of one or more extractions side by side, given (extraction digest, layer keys)
    each: one extraction's is its own key as before."""
    return svm_key(dataset_fingerprint, COMBINED.join(digest for digest, _ in extractions),
                   COMBINED.join(layer for _, layers in extractions for layer in layers), norms, grid)


def bow_key(dataset_fingerprint: str, config: BowConfig, grid: GridConfig) -> str:
    return content_key(KeyKind.BOW, dataset=dataset_fingerprint, bow=config, **_grid_fields(grid))


def fisher_key(dataset_fingerprint: str, config: FisherConfig, grid: GridConfig) -> str:
    return content_key(KeyKind.FISHER, dataset=dataset_fingerprint, fisher=config, **_grid_fields(grid))


def head_key(dataset_fingerprint: str, features_key: str, layer: str, spec: HeadSpec, candidates: list[TrainConfig]) -> str:
    return content_key(KeyKind.HEAD, dataset=dataset_fingerprint, features=features_key, layer=layer, head=spec,
                       train=candidates)


def _data_notes(dataset: ImageDataset) -> dict:
    """What a report must say about the data a run saw (kept with the run, not part of its key)."""
    per_class = [sum(s.label == label for s in dataset.samples("train")) for label in range(len(dataset.classes))]
    return {"test_duplicates": len(dataset.test_duplicates()), "layout": dataset.layout,
            "images": {split: len(dataset.samples(split)) for split in ("train", "test")},
            "train_per_class": [min(per_class), max(per_class)]}


def base_record(method: Method, dataset: ImageDataset, config: dict, **fields) -> RunRecord:
    """A store row for a run on ``dataset``: what every run records (the data, its classes, notes on it,
    the library versions), plus the method's own ``fields``."""
    return RunRecord(method=method, dataset=str(dataset.root), dataset_fingerprint=dataset.fingerprint,
                     classes=list(dataset.classes), config={**config, **_data_notes(dataset)},
                     versions=library_versions(), **{"test_accuracy": 0.0, **fields})


def _training_fields(result: TrainingResult, timings: dict | None = None, *, device: str) -> dict:
    """The store fields of a trained network: test scores, the validation-chosen epoch, curves, times,
    and the device it trained on."""
    return {"test_accuracy": result.test_accuracy, "chosen": f"epoch {result.best_epoch}",
            "cv_best": result.best_val_accuracy, "per_class_accuracy": result.per_class_accuracy,
            "confusion": result.confusion, "curves": result.curves,
            "timings": {"fit_seconds": float(sum(result.curves["epoch_seconds"])), **(timings or {}),
                        "epoch_seconds": result.epoch_seconds, "train_device": device}}


def model_path(cache_dir: Path, key: str, label: str) -> Path:
    """The model file of one run: named by the run's full content key, so two runs that differ in
    anything (C grid, folds, seed, splits, settings) never share a file."""
    return CacheFolder(cache_dir).artifact("models", f"{safe_name(label)}-{key}{SKOPS_SUFFIX}")


def _fit_and_record(
    search: Search,
    splits: dict[str, tuple[Any, np.ndarray]],  # features: arrays, or BoW's sparse histograms
    classes: list[str],
    grid: GridConfig,
    build: Callable[[Any, float], ModelFile],
    cache_dir: Path,
    key: str,
    record: RunRecord,
    store: ResultsStore,
    name: str,
    finalize: Callable = lambda model: model,
    probe: Probe = Probe.SVM,
) -> GridOutcome:
    """The probe's ``search`` on the dataset's split (with several candidates, the best CV wins), optional
    re-drawn splits (each choosing again), model file, one store row. With several candidates the
    record's ``norm`` is the chosen one and ``candidates_cv`` holds each one's best CV accuracy. ``build(fitted
    model, chosen setting)`` makes the model file's content, named by its label and the run's ``key``."""
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    check_training_labels(y_train, grid.cv, classes)  # here, where the labels' class names are known
    begun = time.perf_counter()
    chosen, result, candidates_cv = search.grid((x_train, y_train), (x_test, y_test), grid, len(classes))
    redrawn = None
    if grid.splits > 1:
        x = sparse.vstack([x_train, x_test]).tocsr() if sparse.issparse(x_train) else np.concatenate([x_train, x_test])
        y = np.concatenate([y_train, y_test])
        per_class = int(np.bincount(y_train).max())
        redrawn = search.redrawn(x, y, redraw_splits(y, per_class, grid.splits, grid.seed), grid)
    model = build(finalize(result.model), result.chosen)
    path = save_model(model_path(cache_dir, key, model.label().file_stem), model)
    outcome = GridOutcome(name, result, 0, path, redrawn, record.timings, candidates_cv=candidates_cv, chosen_candidate=chosen,
                          probe=probe)
    mean, std = outcome.mean_std
    record = searched_record(
        record, result, {"cv": grid.cv, "seed": grid.seed, "split_accuracies": redrawn,
                         **({"norm": chosen, "candidates_cv": candidates_cv} if chosen is not None else {})},
        test_accuracy=mean, test_std=std, splits=grid.splits, classes=classes,
        timings={**record.timings, "fit_seconds": time.perf_counter() - begun},  # the whole stage: every split
        model_path=str(path))
    outcome.run_id = store.add(record)
    return outcome


def searched_record(record: RunRecord, result: GridResult, config: dict, **fields) -> RunRecord:
    """``record`` with a probe's search: its grid (a C grid, else its settings as text), CV accuracies (none
    without CV), chosen setting and test scores, plus ``config`` and ``fields`` of the caller's own."""
    c_values = all(isinstance(setting, (int, float)) for setting in result.grid)  # a C grid, else k-NN's or none
    cross_validated = not any(np.isnan(result.cv_mean))
    return replace(
        record,
        config={**record.config, **config, "test_correct": result.test_correct,
                **({} if c_values else {"settings": [str(setting) for setting in result.grid if setting is not None]})},
        c_grid=result.grid if c_values else None,
        cv_accuracy=result.cv_mean if cross_validated else None,
        test_accuracy_per_c=result.test_per_setting,
        chosen=result.chosen if c_values or result.chosen is None else str(result.chosen),
        cv_best=max(result.cv_mean) if cross_validated else None,
        per_class_accuracy=result.per_class_accuracy,
        confusion=result.confusion,
        versions=library_versions(),
        **{"test_accuracy": result.test_accuracy, **fields},
    )


def run_svm(
    dataset: ImageDataset,
    features: FeatureSpec,
    cache_dir: Path,
    grid: GridConfig,
    norms: tuple[Norm, ...] = DEFAULT_NORMS,
    store: ResultsStore | None = None,
    combine: bool = False,
    probes: tuple[Probe, ...] = DEFAULT_PROBES,
    knn: KnnGrid = KnnGrid(),
) -> list[GridOutcome]:
    """Per cached layer, one search of each of ``probes`` (the linear SVM by default); with several ``norms``,
    CV also chooses among them for the linear probes. With ``combine``, all the layers side by side (each
    L2-normalised per image) instead."""
    layer_keys = list(resolve(features, cache_dir).layer_keys)
    if combine:
        check_combination(features.layers)
    groups = [layer_keys] if combine else [[layer] for layer in layer_keys]
    return [_probe_on_parts(dataset, [(features, layers)], cache_dir, grid, norms, store, ProbeSetup(probe=probe, knn=knn))
            for layers in groups for probe in probes]


def run_svm_side_by_side(dataset: ImageDataset, parts: list[FeatureSpec], cache_dir: Path, grid: GridConfig,
                         norms: tuple[Norm, ...] = DEFAULT_NORMS, store: ResultsStore | None = None,
                         setup: ProbeSetup | None = None) -> GridOutcome:
    """One linear SVM (or ``setup``'s probe) on several extractions side by side (e.g. three networks' pooled
    features): every layer of every part L2-normalised per image, then concatenated, as `combine` does within
    one network."""
    check_parts(parts)
    return _probe_on_parts(dataset, [(part, list(resolve(part, cache_dir).layer_keys)) for part in parts],
                           cache_dir, grid, norms, store, setup or ProbeSetup())


@dataclass(frozen=True, kw_only=True)
class ProbeSetup:
    """Which probe classifies the features, and k-NN's grid (read by k-NN only)."""

    probe: Probe = Probe.SVM
    knn: KnnGrid = KnnGrid()

    def norms(self, asked: tuple[Norm, ...]) -> tuple[Norm, ...]:
        """The normalisations CV chooses among: the ones asked for, for a linear probe; k-NN and the class
        means are defined on L2-normalised rows."""
        return asked if self.probe in (Probe.SVM, Probe.LOGREG) else (Norm.L2,)

    def searched(self, grid: GridConfig) -> dict[str, list]:
        """The settings the probe's CV chooses among, as its keys name them (the class means: none)."""
        grids: dict[Probe, dict[str, list]] = {
            Probe.SVM: {"c_grid": list(grid.c_grid)}, Probe.LOGREG: {"c_grid": list(grid.c_grid)},
            Probe.KNN: {"k_grid": list(self.knn.k_grid), "temperatures": list(self.knn.temperatures)}}
        return grids.get(self.probe, {})

    def key(self, dataset_fingerprint: str, extractions: list[tuple[str, list[str]]], norms: tuple[Norm, ...],
            grid: GridConfig) -> str:
        """The run's content key: an SVM's as it always was; another probe's names the probe and its own grid."""
        if self.probe == Probe.SVM:
            return parts_svm_key(dataset_fingerprint, extractions, norms, grid)
        return content_key(KeyKind.PROBE, probe=str(self.probe), dataset=dataset_fingerprint,
                           features=COMBINED.join(digest for digest, _ in extractions),
                           layer=COMBINED.join(layer for _, layers in extractions for layer in layers), norm=",".join(norms),
                           cv=grid.cv, seed=grid.seed, splits=grid.splits, **self.searched(grid))


def _probe_on_parts(dataset: ImageDataset, parts: list[tuple[FeatureSpec, list[str]]], cache_dir: Path,
                    grid: GridConfig, norms: tuple[Norm, ...], store: ResultsStore | None, setup: ProbeSetup) -> GridOutcome:
    """The search, model file and store row of a probe (``setup``) on some layers (keys) of some extractions.
    One part keeps the single-extraction model file (``features``, ``layer_key``, ``extraction_key``);
    several go under ``parts``, one such entry each, which `transfer predict` runs one after the other."""
    store = store_or_default(store, cache_dir)
    norms = setup.norms(norms)
    norm = ",".join(norms)  # what the record and the model file name say until CV has chosen
    entries, blocks = [], []
    for features, layers in parts:
        loaded = [load_layer(dataset, features, cache_dir, layer) for layer in layers]
        resolved = loaded[0][0]
        blocks += [layer_data for _, layer_data in loaded]
        one = features.for_layers(tuple(key.split(":")[0] for key in layers))
        entries.append((resolved, one, Extraction(features=asdict(one), layer_key=COMBINED.join(layers),
                                                  extraction_key=resolved.key.as_dict())))
    data = _side_by_side(blocks)
    layer = data.layer  # its key, or the keys joined
    first, one = entries[0][0], entries[0][1]

    def joined(values) -> str:
        return COMBINED.join(dict.fromkeys(values))

    key = setup.key(dataset.fingerprint, [(r.key.digest, layers) for (r, _, _), (_, layers) in zip(entries, parts)],
                    norms, grid)
    search = search_of(setup.probe, norms, setup.knn, len(data.classes))
    described = ({"features": asdict(one)} if len(entries) == 1
                 else {"parts": [asdict(part) for _, part, _ in entries]})
    probe = {} if setup.probe == Probe.SVM else {"probe": str(setup.probe)}
    record = base_record(
        Method.SVM if setup.probe == Probe.SVM else Method.PROBE, dataset, {"norm": norm, **described, "key": key, **probe},
        backbone=joined(r.key.backbone for r, _, _ in entries), weights=joined(r.key.weights for r, _, _ in entries),
        pooling=first.key.pooling, layer=layer, precision=joined(r.key.precision for r, _, _ in entries),
        timings=_summed([extraction_timing(r.path) for r, _, _ in entries]),
    )
    extractions = tuple(extraction for _, _, extraction in entries)

    def build(fitted, chosen) -> SvmModel:  # a ProbeModel is one
        if setup.probe == Probe.SVM:
            return SvmModel(classes=data.classes, model=fitted, extractions=extractions, chosen_c=chosen, norm=norm)
        return ProbeModel(classes=data.classes, model=fitted.as_payload() if isinstance(fitted, KnnModel) else fitted,
                          extractions=extractions, chosen_c=chosen if isinstance(chosen, float) else 0.0, norm=norm,
                          probe=setup.probe, setting="" if chosen is None else str(chosen))

    splits = {name: (s.features, s.labels) for name, s in data.splits.items()}
    return _fit_and_record(search, splits, data.classes, grid, build, cache_dir, key, record, store, layer,
                           probe=setup.probe)


def _summed(timings: list[dict]) -> dict:
    """Several extractions' timings as one: seconds and images add up (one extraction: as it is)."""
    if len(timings) == 1:
        return timings[0]
    seconds = sum(t["extract_seconds"] for t in timings)
    images = sum(t["extract_images"] for t in timings)
    return {"extract_seconds": seconds, "extract_images": images,
            "extract_images_per_s": images / seconds if seconds else 0.0,
            "loader_wait_seconds": sum(t["loader_wait_seconds"] for t in timings),
            "extract_devices": sorted({d for t in timings for d in t["extract_devices"]}),
            "extract_runtimes": list(dict.fromkeys(r for t in timings for r in t.get("extract_runtimes", [])))}


def _side_by_side(layers: list):
    """One layer's features, or several layers' side by side (`side_by_side`) as one."""
    if len(layers) == 1:
        return layers[0]
    first = layers[0]
    splits = {name: replace(split, features=side_by_side([layer.splits[name].features for layer in layers]))
              for name, split in first.splits.items()}
    return replace(first, layer=COMBINED.join(layer.layer for layer in layers), splits=splits)


def run_bow(
    dataset: ImageDataset,
    config: BowConfig,
    cache_dir: Path,
    grid: GridConfig,
    store: ResultsStore | None = None,
) -> GridOutcome:
    """Dense SIFT → vocabulary → (pyramid) histograms → χ² or intersection kernel map → linear SVM."""
    features = bow_features(dataset, config, cache_dir, grid.jobs)
    store = store_or_default(store, cache_dir)
    name = BowLabel(config=config).file_stem
    key = bow_key(dataset.fingerprint, config, grid)
    record = base_record(Method.BOW, dataset, {**asdict(config), "key": key}, layer=f"sift-L{config.pyramid}", timings=features.timings)

    def build(fitted, chosen_c: float) -> BowModel:
        return BowModel(classes=dataset.classes, model=fitted, encoder=features.kmeans, config=config, chosen_c=chosen_c)

    return _fit_and_record(LinearSearch({config.kernel.value: plain_svm}), features.splits, dataset.classes, grid, build,
                           cache_dir, key, record, store, name, finalize=features.model)


def run_fisher(
    dataset: ImageDataset,
    config: FisherConfig,
    cache_dir: Path,
    grid: GridConfig,
    store: ResultsStore | None = None,
) -> GridOutcome:
    """Dense SIFT → PCA + Gaussian mixture → improved Fisher vectors (pyramid) → linear SVM.
    Stored as a `bow`-method run (a local-descriptor encoding) whose config says ``encoding: fisher``."""
    features = fisher_features(dataset, config, cache_dir, grid.jobs)
    store = store_or_default(store, cache_dir)
    name = FisherLabel(config=config).file_stem
    key = fisher_key(dataset.fingerprint, config, grid)
    record = base_record(Method.BOW, dataset, {"encoding": "fisher", **asdict(config), "key": key}, layer=name,
                     timings=features.timings)

    def build(fitted, chosen_c: float) -> FisherModel:
        return FisherModel(classes=dataset.classes, model=fitted, encoder=features.encoder, config=config, chosen_c=chosen_c)

    return _fit_and_record(LinearSearch({"power, L2": plain_svm}), features.splits, dataset.classes, grid, build, cache_dir, key,
                           record, store, name)


@dataclass
class HeadOutcome:
    spec: HeadSpec
    layer: str
    result: TrainingResult
    run_id: int
    model_path: Path
    candidates: list[dict] = field(default_factory=list)  # settings tried, with their validation accuracy


def run_head(
    dataset: ImageDataset,
    features: FeatureSpec,
    head: str,
    configs: TrainConfig | list[TrainConfig],
    cache_dir: Path,
    options: RunOptions = RunOptions(),
    dropout: float = 0.5,
    store: ResultsStore | None = None,
    progress: Callable | None = None,
    end_to_end: EndToEnd | None = None,
) -> HeadOutcome:
    """A new head on the frozen backbone, trained on its cached features (extracted first if missing);
    with ``end_to_end``, the head and the unfrozen layers are trained from images instead."""
    spec = HeadSpec.parse(head, len(dataset.classes), dropout)
    candidates = configs if isinstance(configs, list) else [configs]
    labels = np.array([s.label for s in dataset.samples("train")])
    for candidate in candidates:  # before any image is extracted
        check_validation_split(labels, candidate.val_fraction)
    if end_to_end is not None:
        if len(candidates) > 1:
            raise UserError("--unfreeze trains one setting at a time: give a single --optimizer and --lr")
        return _run_end_to_end(dataset, features, spec, candidates[0], cache_dir, options, end_to_end, store, progress)
    layer = spec.input_layer(features.backbone)
    feature_spec = features.for_layers((layer,), plain=True)
    extraction = extract(dataset, feature_spec, cache_dir, options)  # a no-op when cached
    resolved, data = load_layer(dataset, feature_spec, cache_dir, layer, options)
    train, test = data.splits["train"], data.splits["test"]
    n_classes = len(data.classes)
    device = resolve_device(options.device)

    def fit(candidate: TrainConfig, score_test: bool) -> TrainingResult:
        key = content_key(KeyKind.HEAD_CHECKPOINT, dataset=dataset.fingerprint, features=resolved.key.digest,
                          layer=layer, head=spec, train=candidate)
        checkpoint = CacheFolder(cache_dir).artifact("heads", f"{safe_name(spec.name)}-{key}.pt")
        return train_head(spec, (train.features, train.labels), (test.features, test.labels), n_classes,
                          candidate, checkpoint, progress, score_test, device)

    # Several settings: each is trained without touching the test split, the best validation accuracy
    # wins (first among ties), and only the winner is scored on test (it resumes from its checkpoint).
    trials = [(candidate, fit(candidate, score_test=False)) for candidate in candidates] if len(candidates) > 1 else []
    tried = [(candidate, trial.best_val_accuracy) for candidate, trial in trials]
    config = max(tried, key=lambda t: t[1])[0] if tried else candidates[0]
    result = fit(config, score_test=True)
    # The stage's whole training time: every setting tried (the winner's epochs are counted once).
    trained_seconds = (sum(sum(trial.curves["epoch_seconds"]) for _, trial in trials) if trials
                       else sum(result.curves["epoch_seconds"]))
    key = head_key(dataset.fingerprint, resolved.key.digest, layer, spec, candidates)
    model = HeadModel(classes=data.classes, head=spec, head_state=state_arrays(result.head.state_dict()),
                      in_features=int(train.features.shape[1]),
                      extraction=Extraction(features=asdict(feature_spec), layer_key=layer,
                                            extraction_key=resolved.key.as_dict()))
    path = save_model(model_path(cache_dir, key, model.label().file_stem), model)
    record = base_record(
        Method.HEAD, dataset,
        {"head": spec.name, "dropout": dropout, "train": asdict(config), "features": asdict(feature_spec),
         "candidates": [{"optimizer": c.optimizer, "lr": c.lr, "val_accuracy": v} for c, v in tried], "key": key,
         "test_correct": result.test_correct},
        backbone=resolved.key.backbone, weights=resolved.key.weights, pooling=resolved.key.pooling, layer=layer,
        precision=resolved.key.precision, model_path=str(path),
        **_training_fields(result, {**extraction_timing(extraction.path), "fit_seconds": float(trained_seconds)},
                           device=device),
    )
    return HeadOutcome(spec, layer, result, store_or_default(store, cache_dir).add(record), path,
                       record.config["candidates"])


def store_or_default(store: ResultsStore | None, cache_dir: Path) -> ResultsStore:
    return store or ResultsStore(CacheFolder(cache_dir).results_path)


def _run_end_to_end(dataset, features, spec, config, cache_dir, options, setup: EndToEnd, store, progress) -> HeadOutcome:
    from transfer.features.backbones import Weights, build_model
    from transfer.features.registry import get_backbone

    resolved = resolve(features.for_layers((spec.input_layer(features.backbone),), plain=True), cache_dir, options.device)
    backbone = get_backbone(features.backbone)
    weights = Weights.parse(features.weights)
    model = build_model(backbone, weights, features.pooling)
    head = attach_head(model, backbone.name, spec, len(dataset.classes))
    run_key = content_key(KeyKind.NETWORK, dataset=dataset.fingerprint, features=resolved.key.digest, head=spec,
                          train=config, end_to_end=setup)
    checkpoint = CacheFolder(cache_dir).artifact("heads", f"{safe_name(spec.name + '-' + setup.unfreeze)}-{run_key}.pt")
    result = train_end_to_end(dataset, spec, model, head, backbone.name, resolved.key.preprocessing, resolved.key.precision,
                              resolved.device, setup, config, checkpoint, progress)
    saved = NetworkModel(classes=dataset.classes, head=spec, state=state_arrays(result.head.state_dict()),
                         features=asdict(features), extraction_key=resolved.key.as_dict(), unfreeze=setup.unfreeze)
    path = save_model(model_path(cache_dir, run_key, saved.label().file_stem), saved)
    record = base_record(
        Method.HEAD, dataset,
        {"head": spec.name, "dropout": spec.dropout, "train": asdict(config), "unfreeze": setup.unfreeze,
         "backbone_lr_scale": setup.backbone_lr_scale, "features": asdict(features), "key": run_key,
         "test_correct": result.test_correct},
        backbone=backbone.name, weights=resolved.key.weights, pooling=resolved.key.pooling,
        layer=f"unfreeze {setup.unfreeze}", precision=resolved.key.precision, model_path=str(path),
        **_training_fields(result, device=resolved.device),
    )
    return HeadOutcome(spec, f"images, unfreeze {setup.unfreeze}", result, store_or_default(store, cache_dir).add(record), path)


def scratch_key(dataset_fingerprint: str, config: ScratchConfig, precision: str) -> str:
    from transfer.classifiers.scratch import config_dict

    return content_key(KeyKind.SCRATCH, data=dataset_fingerprint, precision=precision, **config_dict(config))


@dataclass
class ScratchOutcome:
    step: str  # ladder step or grid setting ("" for a single run)
    trained: ScratchResult
    run_id: int


def run_scratch(data: ImageTensors, steps: list[tuple[str, ScratchConfig]], series: str, cache_dir: Path,
                store: ResultsStore | None = None, progress: Callable[[str], Callable] | None = None,
                compute: Compute = Compute()) -> list[ScratchOutcome]:
    """Train each (step, config) from scratch; every one is a row in the store with its curves.
    ``progress(label)`` gives each step's per-epoch callback (`training.epoch_lines`)."""
    from transfer.classifiers.scratch import config_dict, train_scratch

    store = store_or_default(store, cache_dir)
    outcomes = []
    for step, config in steps:
        settings = config_dict(config)
        key = scratch_key(data.fingerprint, config, compute.precision)
        checkpoint = CacheFolder(cache_dir).artifact("scratch", f"{config.arch}-{key}.pt")
        trained = train_scratch(data, config, checkpoint, progress(f"{config.arch} {step}".strip()) if progress else None,
                                compute)
        result = trained.result
        record = RunRecord(
            method=Method.SCRATCH, dataset=data.name, dataset_fingerprint=data.fingerprint, classes=data.classes,
            config={"series": series, "step": step, **settings, "parameters": trained.parameters,
                    "normalization": {"mean": trained.mean, "std": trained.std}, "key": key,
                    "test_correct": result.test_correct},
            backbone=config.arch, weights="scratch", layer=f"{config.input_size}px", precision=compute.precision,
            versions=library_versions(), **_training_fields(result, device=compute.device),
        )
        outcomes.append(ScratchOutcome(step, trained, store.add(record)))
    return outcomes
