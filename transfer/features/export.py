"""One cached layer of a data set's images as a plain file for other tools: a row per readable image with
its path, content digest, split, label and class, and the feature vector (Parquet, or NumPy's .npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer.core.errors import UserError
from transfer.core.files import atomic_path
from transfer.data.datasets import SPLITS, ImageDataset
from transfer.features.cache import describe_file, read_features

FORMATS = (".parquet", ".npz")


def export_layer(cache_file: Path, dataset: ImageDataset, out: Path, layer: str | None = None) -> int:
    """``layer`` of the cache file for ``dataset``'s images (its only layer when None) written to ``out``, whose
    suffix says the format; returns the rows written."""
    if out.suffix not in FORMATS:
        raise UserError(f"--out {out}: the file name says the format, one of {', '.join(FORMATS)}")
    if not cache_file.is_file():
        raise UserError(f"{cache_file} is not a file; `transfer cache ls` lists the cached extractions")
    layers = list(describe_file(cache_file).layers)
    if layer is None and len(layers) != 1:
        raise UserError(f"{cache_file.name} holds the layers {', '.join(layers) or '(none)'}: name one with --layer")
    if layer is not None and layer not in layers:
        raise UserError(f"{cache_file.name} has no layer {layer!r}; it holds {', '.join(layers) or 'none'}")
    features = read_features(cache_file, layer or layers[0], dataset)
    digests = dataset.file_digests
    splits = [features.splits[split] for split in SPLITS]
    labels = np.concatenate([part.labels for part in splits]).astype(np.int64)
    columns: dict[str, list] = {
        "path": [path for part in splits for path in part.paths],
        "digest": [digests[path] for part in splits for path in part.paths],
        "split": [split for split, part in zip(SPLITS, splits) for _ in part.paths],
        "label": labels.tolist(),
        "class": [features.classes[label] for label in labels],
    }
    vectors = np.concatenate([part.features for part in splits]).astype(np.float32)
    with atomic_path(out) as partial:
        if out.suffix == ".npz":
            with open(partial, "wb") as f:  # np.savez adds ".npz" to a name without it
                arrays: dict[str, np.ndarray] = {name: np.asarray(values) for name, values in columns.items()}
                np.savez(f, features=vectors, classes=np.array(features.classes), **arrays)  # type: ignore[arg-type]
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({**columns, "features": pa.FixedSizeListArray.from_arrays(vectors.ravel(), vectors.shape[1])})
            pq.write_table(table, partial)
    return len(vectors)
