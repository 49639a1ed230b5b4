"""`transfer` as a library, for notebooks: cached features as arrays, the probes as a scikit-learn
classifier, the results store as a data frame. `import transfer` exposes these lazily (the CLI's start stays
fast); the CLI's commands run the same functions underneath."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transfer.classifiers.estimator import LinearProbe
from transfer.core.paths import CacheFolder, default_cache_dir, default_data_dir
from transfer.data.datasets import load_dataset
from transfer.features.cache import LayerFeatures
from transfer.features.extract import load_layer, resolve
from transfer.features.spec import FeatureSpec
from transfer.runs.store import ResultsStore

if TYPE_CHECKING:
    import pandas

__all__ = ["LinearProbe", "load_features", "results"]


def load_features(data: str | Path | None = None, backbone: str = FeatureSpec.backbone, layer: str | None = None,
                  weights: str = FeatureSpec.weights, cache_dir: str | Path | None = None, **selection: Any) -> LayerFeatures:
    """One cached layer of a data set's features: ``.splits["train"|"test"]`` each hold ``features`` (rows ×
    dimensions), ``labels`` (class numbers into ``.classes``) and ``paths``. ``selection``: the other fields of
    an extraction as `transfer extract` takes them (``pooling``, ``views``, ``image_size``, ``precision``, ...).
    Features not extracted yet are an error that names the `transfer extract` command to run."""
    spec = FeatureSpec(backbone=backbone, weights=weights, layers=(layer,) if layer else (), **selection)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dataset = load_dataset(Path(data) if data is not None else default_data_dir())
    (key,) = resolve(spec, cache).layer_keys
    return load_layer(dataset, spec, cache, key)[1]


def results(store: str | Path | None = None) -> pandas.DataFrame:
    """Every run in the results store (a cache folder, or its ``results.sqlite``; default: the default cache) as
    a pandas data frame, one row per run, the columns of `transfer results --format csv`."""
    import pandas

    from transfer.reports.runs_table import COLUMNS, run_row

    path = Path(store) if store is not None else default_cache_dir()
    if path.is_dir() or path.suffix != ".sqlite":
        path = CacheFolder(path).results_path
    return pandas.DataFrame([run_row(run) for run in ResultsStore(path).runs()], columns=list(COLUMNS))
