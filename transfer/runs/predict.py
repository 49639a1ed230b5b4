"""`transfer predict`: classify new images with a saved model, through that model's own preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from transfer.core.archive import state_tensors
from transfer.core.choices import WeightsSource
from transfer.core.errors import UserError
from transfer.data.images import image_paths
from transfer.features.backbones import Preprocessing, Weights, build_extractor, build_model, get_backbone, weights_id
from transfer.runs.models import load_model


@dataclass
class Prediction:
    path: str
    classes: list[str]  # best first
    scores: list[float]
    error: str | None = None


def _preprocessing(key: dict) -> Preprocessing:
    prep = key["preprocessing"]
    return replace(Preprocessing(**prep), mean=tuple(prep["mean"]), std=tuple(prep["std"]))


def _forward(network, nodes: dict[str, str], spatial: str, key: dict, paths: list[Path], device: str, batch_size: int):
    """Run images through `network` (already on `device`, returning a dict of node outputs);
    (each node's output, in the order of ``nodes``; readable mask)."""
    from transfer.features.forward import make_loader, network_batches

    loader = make_loader(paths, _preprocessing(key), device, batch_size, workers=0)
    parts: list[list[np.ndarray]] = [[] for _ in nodes]
    oks = []
    for arrays, ok, _ in network_batches(network, loader, device, key["precision"], nodes, spatial):
        for part, name in zip(parts, nodes):
            part.append(arrays[name][ok])
        oks.append(ok)
    return [np.concatenate(part) for part in parts], np.concatenate(oks)


def _cnn_features(payload: dict, paths: list[Path], device: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The features a saved SVM or head saw: its layers side by side as it was trained on them, of one
    extraction, or of several (``parts``: e.g. three networks), each run in turn on the same images."""
    from transfer.classifiers.svm import side_by_side

    blocks: list[np.ndarray] = []
    readable: np.ndarray | None = None
    for part in payload.get("parts") or [payload]:
        part_blocks, part_readable = _network_blocks(part, paths, device, batch_size)
        if readable is not None and not np.array_equal(readable, part_readable):
            raise UserError("the networks of this model could not read the same images; convert the images to JPEG or PNG")
        blocks, readable = blocks + part_blocks, part_readable
    assert readable is not None  # a model has at least one part
    return (side_by_side(blocks) if len(blocks) > 1 else blocks[0]), readable


def _network_blocks(payload: dict, paths: list[Path], device: str, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """One extraction's layers of the images, each a block (readable images only), and the readable mask."""

    from transfer.core.device import resolve_device

    key = payload["extraction_key"]
    spec = get_backbone(key["backbone"])
    device = resolve_device(device)
    weights = Weights.parse(payload["features"]["weights"])
    if weights_id(spec, weights) != key["weights"]:
        raise UserError(f"the weights this model was trained on ({key['weights']}) are not the ones found now "
                        f"({weights_id(spec, weights)}); the features would not match")
    from transfer.classifiers.svm import COMBINED

    nodes = {layer_key: spec.layers[layer].node
             for layer_key, layer in zip(payload["layer_key"].split(COMBINED), payload["features"]["layers"])}
    extractor = build_extractor(spec, weights, key["pooling"], list(nodes.values()), device)
    return _forward(extractor, nodes, payload["features"]["spatial"], key, paths, device, batch_size)


def _network_probabilities(payload: dict, paths: list[Path], device: str, batch_size: int):
    """A network fine-tuned end to end: its whole state is in the file, so no weights are fetched."""
    import torch

    from transfer.classifiers.heads import HeadSpec, attach_head
    from transfer.core.device import resolve_device

    key = payload["extraction_key"]
    spec = get_backbone(key["backbone"])
    model = build_model(spec, Weights(WeightsSource.RANDOM), key["pooling"])
    head = payload["head"]
    attach_head(model, spec.name, HeadSpec(name=head["name"], hidden=tuple(head["hidden"]), dropout=head["dropout"]), len(payload["classes"]))
    model.load_state_dict(state_tensors(payload["state"]))
    device = resolve_device(device)
    model = model.eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack (device, memory_format)
    (logits,), ok = _forward(lambda x: {"logits": model(x)}, {"logits": "logits"}, "flatten", key, paths, device, batch_size)
    return torch.softmax(torch.as_tensor(logits), dim=1).numpy(), ok


def _head_probabilities(payload: dict, features: np.ndarray) -> np.ndarray:
    import torch

    from transfer.classifiers.heads import HeadSpec

    spec = payload["head"]
    head = HeadSpec(name=spec["name"], hidden=tuple(spec["hidden"]), dropout=spec["dropout"]).build(payload["in_features"], len(payload["classes"]))
    head.load_state_dict(state_tensors(payload["head_state"]))
    with torch.inference_mode():
        return torch.softmax(head.eval()(torch.as_tensor(features, dtype=torch.float32)), dim=1).numpy()


def predict(model_path: Path, inputs: list[Path], top: int = 1, device: str = "auto", batch_size: int = 32) -> list[Prediction]:
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    payload = load_model(model_path)
    paths = image_paths(inputs)
    classes = payload["classes"]
    if payload["kind"] == "bow":
        from transfer.descriptors.bow import image_histograms
        from transfer.descriptors.settings import BowConfig

        features, ok = image_histograms(paths, BowConfig.from_dict(payload["bow_config"]), payload["vocabulary"])
    elif payload["kind"] == "fisher":
        from transfer.descriptors.fisher import image_vectors
        from transfer.descriptors.settings import FisherConfig

        features, ok = image_vectors(paths, FisherConfig.from_dict(payload["fisher_config"]), payload["encoder"])
    elif payload["kind"] == "network":
        features, ok = _network_probabilities(payload, paths, device, batch_size)
    else:
        features, ok = _cnn_features(payload, paths, device, batch_size)
    if not len(features):
        scores = np.zeros((0, len(classes)))
    elif payload["kind"] == "network":
        scores = features
    elif payload["kind"] == "head":
        scores = _head_probabilities(payload, features)
    else:
        scores = payload["model"].decision_function(features)
        scores = scores if scores.ndim == 2 else np.stack([-scores, scores], axis=1)  # two classes: one margin
    rows = iter(scores)
    predictions = []
    for path, readable in zip(paths, ok):
        if not readable:
            predictions.append(Prediction(str(path), [], [], "unreadable image"))
            continue
        row = next(rows)
        best = np.argsort(-row)[:top]
        predictions.append(Prediction(str(path), [classes[i] for i in best], [float(row[i]) for i in best]))
    return predictions
