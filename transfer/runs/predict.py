"""`transfer predict`: classify new images with a saved model, through that model's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.core.choices import Device, Runtime
from transfer.core.errors import UserError
from transfer.data.images import image_paths
from transfer.features.spec import RunOptions
from transfer.runs.models import load_model


@dataclass
class Prediction:
    path: str
    classes: list[str]  # best first
    scores: list[float]
    error: str | None = None


def predict(model_path: Path, inputs: list[Path], top: int = 1, device: str = "auto", batch_size: int = 32,
            runtime: Runtime = Runtime.AUTO) -> list[Prediction]:
    """The ``top`` classes of every image under ``inputs``, by the model file's own scores."""
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    model = load_model(model_path)
    paths = image_paths(inputs)
    scores, ok = model.scores(paths, RunOptions(device=Device(device), batch_size=batch_size, runtime=runtime))
    rows = iter(scores)
    predictions = []
    for path, readable in zip(paths, ok):
        if not readable:
            predictions.append(Prediction(str(path), [], [], "unreadable image"))
            continue
        row = next(rows)
        best = np.argsort(-row)[:top]
        predictions.append(Prediction(str(path), [model.classes[i] for i in best], [float(row[i]) for i in best]))
    return predictions
