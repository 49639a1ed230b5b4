"""Few-shot curves on cached features: for each probe, shot count and seed, a subset of the training split
searched on its own images and scored on the whole test split; one store row each, under a key that names
the seed, so an interrupted curve resumes where it stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transfer.classifiers.fewshot import check_shots, subset_rows, subset_search
from transfer.classifiers.settings import DEFAULT_NORMS, FewShotConfig, GridConfig, KnnGrid
from transfer.classifiers.svm import GridResult
from transfer.core.choices import Folds, Method, Probe
from transfer.core.keys import KeyKind, content_key
from transfer.data.datasets import ImageDataset
from transfer.features.cache import LayerFeatures
from transfer.features.extract import Resolved, load_layer, resolve
from transfer.features.spec import FeatureSpec
from transfer.runs.jobs import ProbeSetup, base_record, searched_record, store_or_default
from transfer.runs.store import ResultsStore, RunRecord


@dataclass(frozen=True, kw_only=True)
class FewShotCell:
    """One probe on one subset, as stored."""

    shots: int
    seed: int
    accuracy: float
    chosen: str  # the setting its CV chose, or the fixed one ("C=1")
    folds: Folds
    seconds: float  # its search's
    searched: bool  # False: the same subset as an earlier seed's (every image of each class), not searched again
    run_id: int
    cached: bool  # found in the store, not searched by this call

    @classmethod
    def of_run(cls, run: RunRecord, cached: bool) -> FewShotCell:
        config = run.config or {}
        assert run.id is not None  # a stored run has its id
        return cls(shots=int(config["shots"]), seed=int(config["subset_seed"]), accuracy=run.test_accuracy,
                   chosen=run.chosen_text or "no setting", folds=Folds(config["folds"]),
                   seconds=float(run.timings["fit_seconds"]), searched=bool(run.timings["searched"]), run_id=run.id,
                   cached=cached)


@dataclass(frozen=True, kw_only=True)
class FewShotCurve:
    """A probe's cells on one layer, in shot-count order, then seed order."""

    layer: str
    probe: Probe
    cells: tuple[FewShotCell, ...]

    def at(self, shots: int) -> list[FewShotCell]:
        return [cell for cell in self.cells if cell.shots == shots]

    @property
    def seconds(self) -> float:
        """The searches this call ran (a subset shared by every seed: once)."""
        return sum(cell.seconds for cell in self.cells if cell.searched and not cell.cached)


def fewshot_key(dataset_fingerprint: str, features_key: str, layer_key: str, setup: ProbeSetup, grid: GridConfig,
                shots: int, seed: int) -> str:
    """One cell's content key. The fixed settings without CV (`settings.FIXED_C`, `FIXED_KNN`) are not in it:
    changing them bumps `KeyKind.FEWSHOT`'s version."""
    return content_key(KeyKind.FEWSHOT, probe=str(setup.probe), dataset=dataset_fingerprint, features=features_key,
                       layer=layer_key, norm=",".join(setup.norms(DEFAULT_NORMS)), cv=grid.cv, fold_seed=grid.seed,
                       shots=shots, subset_seed=seed, **setup.searched(grid))


def run_fewshot(
    dataset: ImageDataset,
    features: FeatureSpec,
    cache_dir: Path,
    grid: GridConfig,
    fewshot: FewShotConfig,
    probes: tuple[Probe, ...],
    knn: KnnGrid = KnnGrid(),
    store: ResultsStore | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[FewShotCurve]:
    """Per cached layer and probe, the curve over ``fewshot``'s shot counts and seeds; cells already stored
    are read, not searched again. ``progress`` hears of each cell as it is done."""
    store = store_or_default(store, cache_dir)
    curves = []
    for layer in resolve(features, cache_dir).layer_keys:
        resolved, data = load_layer(dataset, features, cache_dir, layer)
        check_shots(data.splits["train"].labels, max(fewshot.shots), data.classes)  # before any search
        for probe in probes:
            curve = _Curve(dataset, features, resolved, data, ProbeSetup(probe=probe, knn=knn), grid, store)
            cells = []
            for shots in fewshot.shots:
                for seed in range(fewshot.seeds):
                    cells.append(cell := curve.cell(shots, seed))
                    if progress is not None:
                        progress(f"{probe} {layer}: {shots} shots, seed {seed}: {100 * cell.accuracy:.2f}% ({cell.chosen})")
            curves.append(FewShotCurve(layer=layer, probe=probe, cells=tuple(cells)))
    return curves


@dataclass
class _Curve:
    """One probe's cells on one layer, each read from the store or searched and stored."""

    dataset: ImageDataset
    features: FeatureSpec
    resolved: Resolved
    data: LayerFeatures
    setup: ProbeSetup
    grid: GridConfig
    store: ResultsStore
    searched: dict[bytes, tuple[GridResult, GridConfig, float]] = field(default_factory=dict)  # by subset: once

    def cell(self, shots: int, seed: int) -> FewShotCell:
        key = fewshot_key(self.dataset.fingerprint, self.resolved.key.digest, self.data.layer, self.setup, self.grid,
                          shots, seed)
        run = self.store.find(key)
        if run is not None:
            return FewShotCell.of_run(run, cached=True)
        train, test = self.data.splits["train"], self.data.splits["test"]
        rows = subset_rows(train.labels, shots, seed)
        first = rows.tobytes() not in self.searched  # every seed draws all of a class's images alike
        norms = self.setup.norms(DEFAULT_NORMS)
        if first:
            begun = time.perf_counter()
            result, config = subset_search(self.setup.probe, norms, self.setup.knn, self.grid,
                                           (train.features[rows], train.labels[rows]), (test.features, test.labels), shots,
                                           len(self.data.classes))
            self.searched[rows.tobytes()] = result, config, time.perf_counter() - begun
        result, config, seconds = self.searched[rows.tobytes()]
        key_of = self.resolved.key
        record = base_record(Method.FEWSHOT, self.dataset, {"probe": str(self.setup.probe), "features": asdict(self.features),
                                                            "key": key},
                             backbone=key_of.backbone, weights=key_of.weights, pooling=key_of.pooling, layer=self.data.layer,
                             precision=key_of.precision)
        record.config.update(train_per_class=[shots, shots], images={"train": len(rows), "test": len(test.labels)})
        record = searched_record(record, result, {"shots": shots, "subset_seed": seed, "folds": str(config.folds),
                                                  "cv": self.grid.cv, "seed": self.grid.seed, "norm": ",".join(norms)},
                                 timings={"fit_seconds": seconds, "searched": first})
        return FewShotCell.of_run(replace(record, id=self.store.add(record)), cached=False)
