"""Model files (`transfer predict` input): one typed class per `ModelKind`, each with its payload, its
label (`runs/labels.py`: the file's name is its stem) and its scores on new images; stored as skops archives (`core/archive.py`) that
load without running code, every field checked on load."""

from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from transfer.classifiers.heads import HeadSpec, attach_head
from transfer.classifiers.settings import COMBINED
from transfer.core.archive import SKOPS_SUFFIX, load_estimator, save_estimator, state_tensors
from transfer.core.choices import MODEL_COMMANDS, Device, ModelKind, Probe, WeightsSource
from transfer.core.config import as_plain, choice
from transfer.core.device import resolve_device
from transfer.core.errors import UserError
from transfer.descriptors.settings import BowConfig, FisherConfig
from transfer.features.backbones import Preprocessing, Weights, build_extractor, build_model, weights_id
from transfer.features.forward import Reduction, make_loader, network_batches
from transfer.features.registry import get_backbone
from transfer.features.runtime import ForwardSetting, forward_for
from transfer.features.spec import RunOptions
from transfer.runs.labels import BowLabel, FeaturesLabel, FisherLabel, HeadLabel, ModelLabel, ProbeLabel

MODEL_FORMAT = 2  # 1: joblib pickles (refused: loading them could run code)
Fields = dict[str, tuple[str, ...]]  # a payload's fields, each with the keys it must hold when it is a dict


def save_payload(path: Path, payload: dict) -> Path:
    """A model file holding ``payload`` as it is (`save_model` writes a typed model)."""
    return save_estimator(path, {"format": MODEL_FORMAT, **payload})


def save_model(path: Path, model: ModelFile) -> Path:
    return save_payload(path, {"kind": model.KIND, **model.payload()})


def _missing_fields(payload: dict, fields: Fields, within: str = "") -> list[str]:
    missing = []
    for name, inner in fields.items():
        if name not in payload:
            missing.append(within + name)
        else:
            value = payload[name]
            missing += [f"{within}{name}.{key}" for key in inner if not isinstance(value, dict) or key not in value]
    return missing


def _preprocessing(key: dict):
    prep = key["preprocessing"]
    return replace(Preprocessing(**prep), mean=tuple(prep["mean"]), std=tuple(prep["std"]))


def _on_device(run: RunOptions) -> RunOptions:
    """``run`` with its device resolved (auto: CUDA where there is one): where a model file's network is built."""
    return replace(run, device=Device(resolve_device(run.device)))


def _forward(network, nodes: dict[str, str], reduce: Reduction, key: dict, paths: list[Path], run: RunOptions
             ) -> tuple[list[np.ndarray], np.ndarray]:
    """Images through ``network`` (a module returning a dict of node outputs, on the resolved ``run.device``) in
    the runtime ``run`` asks for, with the preprocessing of extraction ``key``: each node's output for the
    readable images, in the order of ``nodes``; the readable mask."""
    device = str(run.device)
    preprocessing = _preprocessing(key)
    setting = ForwardSetting(backbone=key["backbone"], nodes=tuple(nodes.values()), preprocessing=preprocessing,
                             precision=key["precision"], device=device, batch_size=run.batch_size, memo_folder=None)
    forward, _ = forward_for(network, setting, run.runtime, len(paths))
    loader = make_loader(paths, preprocessing, device, run.batch_size, workers=0)
    parts: list[list[np.ndarray]] = [[] for _ in nodes]
    oks = []
    for arrays, ok, _ in network_batches(forward, loader, preprocessing, device, key["precision"], nodes, reduce):
        for part, name in zip(parts, nodes):
            part.append(arrays[name][ok])
        oks.append(ok)
    return [np.concatenate(part) for part in parts], np.concatenate(oks)


@dataclass(frozen=True, kw_only=True)
class Extraction:
    """What a model read of one extraction: its feature selection, its layer key(s), the cache's key."""

    features: dict  # the `FeatureSpec` as a dict: weights, layers, spatial, ...
    layer_key: str  # one layer key, or several joined by `COMBINED`
    extraction_key: dict  # the `ExtractionKey` as a dict: backbone, weights, pooling, precision, preprocessing

    FIELDS: ClassVar[Fields] = {"features": ("weights", "layers", "spatial"), "layer_key": (),
                                "extraction_key": ("backbone", "weights", "pooling", "precision", "preprocessing")}

    @classmethod
    def read(cls, payload: dict) -> Extraction:
        return cls(features=payload["features"], layer_key=payload["layer_key"], extraction_key=payload["extraction_key"])

    def payload(self) -> dict:
        return {"features": self.features, "layer_key": self.layer_key, "extraction_key": self.extraction_key}

    @property
    def backbone(self) -> str:
        return self.extraction_key["backbone"]

    @property
    def label(self) -> FeaturesLabel:
        return FeaturesLabel.of({**self.features, "backbone": self.backbone})

    def blocks(self, paths: list[Path], run: RunOptions) -> tuple[list[np.ndarray], np.ndarray]:
        """Its layers of the images, each a block (readable images only), and the readable mask; the weights
        must be the ones the model was trained on."""
        key = self.extraction_key
        spec = get_backbone(key["backbone"])
        weights = Weights.parse(self.features["weights"])
        if weights_id(spec, weights) != key["weights"]:
            raise UserError(f"the weights this model was trained on ({key['weights']}) are not the ones found now "
                            f"({weights_id(spec, weights)}); the features would not match")
        run = _on_device(run)
        nodes = {layer_key: spec.layer(layer).node
                 for layer_key, layer in zip(self.layer_key.split(COMBINED), self.features["layers"])}
        extractor = build_extractor(spec, weights, key["pooling"], list(nodes.values()), str(run.device))
        reduce = Reduction(self.features["spatial"], self.features.get("tokens"), spec.architecture.prefix_tokens)
        return _forward(extractor, nodes, reduce, key, paths, run)


def _cnn_features(extractions: tuple[Extraction, ...], paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
    """The features a model saw: the layers of its extractions side by side (each run in turn on the same
    images), as it was trained on them."""
    from transfer.classifiers.svm import side_by_side

    blocks: list[np.ndarray] = []
    readable: np.ndarray | None = None
    for extraction in extractions:
        part_blocks, part_readable = extraction.blocks(paths, run)
        if readable is not None and not np.array_equal(readable, part_readable):
            raise UserError("the networks of this model could not read the same images; convert the images to JPEG or PNG")
        blocks, readable = blocks + part_blocks, part_readable
    assert readable is not None  # a model reads at least one extraction
    return (side_by_side(blocks) if len(blocks) > 1 else blocks[0]), readable


def _estimator_outputs(estimator) -> int | None:
    classes = getattr(estimator, "classes_", None)
    return None if classes is None else len(classes)


def _margins(model, features: np.ndarray) -> np.ndarray:
    scores = model.decision_function(features)
    return scores if scores.ndim == 2 else np.stack([-scores, scores], axis=1)  # two classes: one margin


@dataclass(frozen=True, kw_only=True)
class ModelFile(ABC):
    """A model file's content: the class names and what scores new images for them."""

    KIND: ClassVar[ModelKind]
    FIELDS: ClassVar[Fields]  # every field `read` takes, each with the keys it must hold
    classes: list[str]

    @classmethod
    @abstractmethod
    def read(cls, payload: dict) -> ModelFile:
        """From a payload whose fields `missing` found complete."""

    @classmethod
    def missing(cls, payload: dict) -> list[str]:
        return _missing_fields(payload, cls.FIELDS)

    @abstractmethod
    def payload(self) -> dict:
        """What the file holds besides its format and kind."""

    @abstractmethod
    def label(self) -> ModelLabel:
        """What the run that made it is called: its file's name starts with the label's stem."""

    @abstractmethod
    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        """A row of class scores per readable image (higher is likelier), and the readable mask over ``paths``."""

    @abstractmethod
    def outputs(self) -> int | None:
        """How many classes the classifier scores (None where it cannot tell)."""


@dataclass(frozen=True, kw_only=True)
class SvmModel(ModelFile):
    """A linear SVM on CNN features: of one extraction, or of several side by side (``parts``)."""

    KIND: ClassVar = ModelKind.SVM
    FIELDS: ClassVar = {"model": (), "classes": ()}  # and `Extraction.FIELDS`, or a list of them as "parts"
    model: Any  # the scikit-learn pipeline: normalisation, LinearSVC
    extractions: tuple[Extraction, ...]
    chosen_c: float
    norm: str = ""  # the normalisation(s) CV chose among; files written before it was kept: ""

    @classmethod
    def missing(cls, payload: dict) -> list[str]:
        parts = payload.get("parts")
        if isinstance(parts, list) and parts:
            return super().missing(payload) + [
                m for i, part in enumerate(parts)
                for m in (_missing_fields(part, Extraction.FIELDS, f"parts[{i}].") if isinstance(part, dict) else [f"parts[{i}]"])]
        return super().missing(payload) + _missing_fields(payload, Extraction.FIELDS)

    @classmethod
    def read(cls, payload: dict) -> SvmModel:
        parts = payload.get("parts") or [payload]
        return cls(classes=payload["classes"], model=payload["model"], extractions=tuple(map(Extraction.read, parts)),
                   chosen_c=payload.get("chosen_c", 0.0), norm=payload.get("norm", ""))

    def payload(self) -> dict:
        read = (self.extractions[0].payload() if len(self.extractions) == 1
                else {"parts": [extraction.payload() for extraction in self.extractions]})
        return {**read, "model": self.model, "classes": self.classes, "chosen_c": self.chosen_c, "norm": self.norm}

    def label(self) -> ProbeLabel:
        return ProbeLabel(parts=tuple(extraction.label for extraction in self.extractions),
                        layer_keys=COMBINED.join(extraction.layer_key for extraction in self.extractions), norm=self.norm)

    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        features, ok = _cnn_features(self.extractions, paths, run)
        return _margins(self.model, features) if len(features) else np.zeros((0, len(self.classes))), ok

    def outputs(self) -> int | None:
        return _estimator_outputs(self.model)


@dataclass(frozen=True, kw_only=True)
class ProbeModel(SvmModel):
    """Another probe on CNN features: logistic regression and the class means as their scikit-learn pipelines,
    k-NN as its arrays (`probes.KnnModel`), which vote per class."""

    KIND: ClassVar = ModelKind.PROBE
    FIELDS: ClassVar = {"model": (), "classes": (), "probe": (), "setting": ()}
    probe: Probe
    setting: str  # the CV-chosen setting, as people read it ("" for the class means)

    @classmethod
    def read(cls, payload: dict) -> ProbeModel:
        probe = choice(Probe, payload["probe"], "probe")
        if probe == Probe.KNN and (not isinstance(payload["model"], dict)
                                   or set(payload["model"]) != {"rows", "labels", "classes", "k", "temperature"}):
            raise UserError("a k-NN model file whose model is not the rows, labels, classes, k and temperature: "
                            "re-run the command that made it")
        svm = SvmModel.read(payload)
        return cls(classes=svm.classes, model=svm.model, extractions=svm.extractions, chosen_c=svm.chosen_c,
                   norm=svm.norm, probe=probe, setting=str(payload["setting"]))

    def payload(self) -> dict:
        return {**super().payload(), "probe": str(self.probe), "setting": self.setting}

    def label(self) -> ProbeLabel:
        return replace(super().label(), probe=self.probe)

    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        if self.probe != Probe.KNN:
            return super().scores(paths, run)
        from transfer.classifiers.probes import KnnModel

        features, ok = _cnn_features(self.extractions, paths, run)
        return KnnModel.of_payload(self.model).scores(features) if len(features) else np.zeros((0, len(self.classes))), ok

    def outputs(self) -> int | None:
        return int(self.model["classes"]) if self.probe == Probe.KNN else super().outputs()


@dataclass(frozen=True, kw_only=True)
class _EncodingModel(ModelFile):
    """A linear SVM on an encoding of dense SIFT: the fitted encoder, its settings and the SVM."""

    ENCODER: ClassVar[str]  # the payload's fields of the encoder and of its settings
    SETTINGS: ClassVar[str]
    model: Any
    encoder: Any
    config: Any
    chosen_c: float

    @classmethod
    @abstractmethod
    def settings(cls, fields: dict) -> Any:
        """The encoding's settings from the payload's field."""

    @abstractmethod
    def encode(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """(the encodings of the readable images, the readable mask)."""

    @classmethod
    def read(cls, payload: dict) -> _EncodingModel:
        return cls(classes=payload["classes"], model=payload["model"], encoder=payload[cls.ENCODER],
                   config=cls.settings(payload[cls.SETTINGS]), chosen_c=payload.get("chosen_c", 0.0))

    def payload(self) -> dict:
        return {self.ENCODER: self.encoder, self.SETTINGS: as_plain(self.config), "model": self.model,
                "classes": self.classes, "chosen_c": self.chosen_c}

    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        encodings, ok = self.encode(paths)
        return _margins(self.model, encodings) if ok.any() else np.zeros((0, len(self.classes))), ok

    def outputs(self) -> int | None:
        return _estimator_outputs(self.model)


@dataclass(frozen=True, kw_only=True)
class BowModel(_EncodingModel):
    """Bag-of-words: the visual vocabulary (a fitted MiniBatchKMeans), the histogram settings, the kernel SVM."""

    KIND: ClassVar = ModelKind.BOW
    FIELDS: ClassVar = {"model": (), "classes": (), "vocabulary": (), "bow_config": ()}
    ENCODER: ClassVar = "vocabulary"
    SETTINGS: ClassVar = "bow_config"
    config: BowConfig

    @classmethod
    def settings(cls, fields: dict) -> BowConfig:
        return BowConfig.from_dict(fields)

    def encode(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        from transfer.descriptors.bow import image_histograms

        return image_histograms(paths, self.config, self.encoder)

    def label(self) -> BowLabel:
        return BowLabel(config=self.config)


@dataclass(frozen=True, kw_only=True)
class FisherModel(_EncodingModel):
    """Fisher vectors: the encoder ({"pca": PCA, "gmm": GaussianMixture}), its settings and the linear SVM."""

    KIND: ClassVar = ModelKind.FISHER
    FIELDS: ClassVar = {"model": (), "classes": (), "encoder": (), "fisher_config": ()}
    ENCODER: ClassVar = "encoder"
    SETTINGS: ClassVar = "fisher_config"
    config: FisherConfig

    @classmethod
    def settings(cls, fields: dict) -> FisherConfig:
        return FisherConfig.from_dict(fields)

    def encode(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        from transfer.descriptors.fisher import image_vectors

        return image_vectors(paths, self.config, self.encoder)

    def label(self) -> FisherLabel:
        return FisherLabel(config=self.config)


def _head_spec(fields: dict) -> HeadSpec:
    return HeadSpec(name=fields["name"], hidden=tuple(fields["hidden"]), dropout=fields["dropout"])


def _last_rows(state: dict) -> int | None:
    """The rows of the last weight matrix of a saved head or network: its output layer comes last."""
    matrices = [value for value in state.values() if np.ndim(value) == 2]
    return int(np.shape(matrices[-1])[0]) if matrices else None


_HEAD_FIELDS = ("name", "hidden", "dropout")


@dataclass(frozen=True, kw_only=True)
class HeadModel(ModelFile):
    """A head trained on a frozen backbone's cached features: its weights and the extraction it read."""

    KIND: ClassVar = ModelKind.HEAD
    FIELDS: ClassVar = {"classes": (), "head": _HEAD_FIELDS, "head_state": (), "in_features": (), **Extraction.FIELDS}
    head: HeadSpec
    head_state: dict  # numpy arrays by parameter name
    in_features: int
    extraction: Extraction

    @classmethod
    def read(cls, payload: dict) -> HeadModel:
        return cls(classes=payload["classes"], head=_head_spec(payload["head"]), head_state=payload["head_state"],
                   in_features=payload["in_features"], extraction=Extraction.read(payload))

    def payload(self) -> dict:
        return {"head": asdict(self.head), "head_state": self.head_state, "in_features": self.in_features,
                "classes": self.classes, **self.extraction.payload()}

    def label(self) -> HeadLabel:
        return HeadLabel(features=self.extraction.label, head=self.head.name)

    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        import torch

        features, ok = _cnn_features((self.extraction,), paths, run)
        head = self.head.build(self.in_features, len(self.classes))
        head.load_state_dict(state_tensors(self.head_state))
        with torch.inference_mode():
            return torch.softmax(head.eval()(torch.as_tensor(features, dtype=torch.float32)), dim=1).numpy(), ok

    def outputs(self) -> int | None:
        return _last_rows(self.head_state)


@dataclass(frozen=True, kw_only=True)
class NetworkModel(ModelFile):
    """A network fine-tuned end to end: its whole state is in the file, so no weights are fetched."""

    KIND: ClassVar = ModelKind.NETWORK
    FIELDS: ClassVar = {"classes": (), "head": _HEAD_FIELDS, "state": (), "extraction_key": Extraction.FIELDS["extraction_key"]}
    head: HeadSpec
    state: dict  # numpy arrays by parameter name: backbone and head
    features: dict  # the `FeatureSpec` it was built from, as a dict
    extraction_key: dict
    unfreeze: str = ""  # the layers trained; files written before it was kept: ""

    @classmethod
    def read(cls, payload: dict) -> NetworkModel:
        return cls(classes=payload["classes"], head=_head_spec(payload["head"]), state=payload["state"],
                   features=payload.get("features", {}), extraction_key=payload["extraction_key"],
                   unfreeze=payload.get("unfreeze", ""))

    def payload(self) -> dict:
        return {"head": asdict(self.head), "state": self.state, "classes": self.classes, "features": self.features,
                "extraction_key": self.extraction_key, "unfreeze": self.unfreeze}

    def label(self) -> HeadLabel:
        features = FeaturesLabel.of({**self.features, "backbone": self.extraction_key["backbone"]})
        return HeadLabel(features=features, head=self.head.name, unfreeze=self.unfreeze)

    def scores(self, paths: list[Path], run: RunOptions) -> tuple[np.ndarray, np.ndarray]:
        import torch


        key = self.extraction_key
        spec = get_backbone(key["backbone"])
        model = build_model(spec, Weights(WeightsSource.RANDOM), key["pooling"])
        attach_head(model, spec.name, self.head, len(self.classes))
        model.load_state_dict(state_tensors(self.state))
        run = _on_device(run)
        model = model.eval().to(str(run.device), memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack (device, memory_format)
        (logits,), ok = _forward(_logits_module(model), {"logits": "logits"}, Reduction(), key, paths, run)
        return torch.softmax(torch.as_tensor(logits), dim=1).numpy(), ok

    def outputs(self) -> int | None:
        return _last_rows(self.state)


def _logits_module(model):
    """``model`` as a module that returns its logits in a dict, as the extractors return their layers."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images):
            return {"logits": self.model(images)}

    return Logits()


MODEL_TYPES: dict[ModelKind, type[ModelFile]] = {cls.KIND: cls for cls in (SvmModel, ProbeModel, BowModel, FisherModel, HeadModel, NetworkModel)}


def read_model(path: Path, payload: dict) -> ModelFile:
    """The typed model of a payload: every field `transfer predict` reads is there, and the class list fits
    the classifier's outputs."""
    kind = ModelKind(payload["kind"])
    model_type = MODEL_TYPES[kind]
    missing = model_type.missing(payload)
    if missing:
        raise UserError(f"{path} is a {kind} model file without {', '.join(missing)}: it was not written by this "
                        f"transfer or was altered; re-run the command that made it (`transfer results --models`)")
    classes = payload["classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise UserError(f"{path}: its class list is not a list of names")
    model = model_type.read(payload)
    outputs = model.outputs()
    if outputs is not None and outputs != len(classes):
        raise UserError(f"{path} names {len(classes)} class(es) but its classifier scores {outputs}: the file was "
                        f"altered or mixed up; re-run the command that made it")
    return model


def _is_pickle(path: Path) -> bool:
    """joblib writes a pickle (protocol byte 0x80), possibly zlib-compressed (0x78)."""
    with open(path, "rb") as file:
        return file.read(1) in (b"\x80", b"\x78")


def load_model(path: Path) -> ModelFile:
    """A model file written by `transfer svm`, `bow` or `finetune`; anything else is a clear error.
    Pickle-based files of earlier versions are never loaded: a pickle can run any code it contains."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; `transfer results` lists the model file of every run")
    expected = f"a transfer model file (written by {MODEL_COMMANDS})"
    if not zipfile.is_zipfile(path) and _is_pickle(path):
        raise UserError(
            f"{path} is a pickle-based model file from an earlier transfer; loading a pickle can run any code "
            f"it contains, so it is not loaded. Re-create it by re-running the command that made it (`transfer "
            f"results` shows its settings): the new file is a {SKOPS_SUFFIX} file, which loads without running code.")
    payload = load_estimator(path, expected)
    if not isinstance(payload, dict) or payload.get("kind") not in set(ModelKind):
        raise UserError(f"{path} is not {expected}")
    if payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} has model format {payload.get('format')}, this transfer reads {MODEL_FORMAT}; re-run the fit")
    return read_model(path, payload)
