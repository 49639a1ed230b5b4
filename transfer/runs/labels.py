"""What a configuration is called, in one place: its stage's name (what `transfer run` prints and `--only`
matches), its model file's name and its report label. Each kind of run has one typed label that renders
all three; it is built from what the run is: a study's configuration before it runs, a model file's
content, or a stored row, whose config is read by key here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transfer.classifiers.settings import COMBINED
from transfer.classifiers.training import TrainConfig
from transfer.core.choices import Kernel, Method, Probe, WeightsSource
from transfer.descriptors.settings import BowConfig, FisherConfig
from transfer.features.backbones import Weights, shown_pooling
from transfer.features.spec import distinguishing
from transfer.runs.store import RunRecord

if TYPE_CHECKING:
    from transfer.classifiers.scratch import ScratchConfig

# The fields that set an extraction apart from its backbone's plain one, as (report label, stage name) show them.
_VARIANT_SHOWN: dict[str, tuple[Callable[[Any], str], Callable[[Any], str]]] = {
    "views": (lambda views: f"mean of {views} views", str),
    "image_size": (lambda size: f"{size} px", lambda size: f"{size}px"),
    "color": (lambda _: "colour", lambda _: "colour"),
}


def _splits_text(splits: int) -> str:
    return f", {splits} splits" if splits > 1 else ""


@dataclass(frozen=True, kw_only=True)
class FeaturesLabel:
    """Which features a classifier read: the backbone, its weights' source, the pooling variant, the layers
    and what sets the extraction apart from the backbone's plain one."""

    backbone: str
    weights: WeightsSource = WeightsSource.IMAGENET
    pooling: str = ""  # as the cache key says it ("max" also for backbones without variants)
    layers: tuple[str, ...] = ()  # by name
    variant: dict = field(default_factory=dict)  # `spec.distinguishing` of the features

    @classmethod
    def of(cls, features: dict, weights: WeightsSource | None = None) -> FeaturesLabel:
        """From a `FeatureSpec` as a dict (a model file's, a stored row's); ``weights``: the source the
        extraction's key names, where known."""
        return cls(backbone=features["backbone"], weights=weights or Weights.source_of(str(features.get("weights", ""))),
                   pooling=str(features.get("pooling", "")), layers=tuple(features.get("layers", ())),
                   variant=distinguishing(features))

    @property
    def where(self) -> str:
        """In stage names: "vgg16/avg·32px"."""
        return "/".join(filter(None, (self.backbone, shown_pooling(self.backbone, self.pooling)))) + self.short_variant

    @property
    def short_variant(self) -> str:
        return "".join(f"·{_VARIANT_SHOWN[name][1](value)}" for name, value in self.variant.items())

    @property
    def variant_text(self) -> str:
        """In report labels: ", mean of flip views, 288 px"."""
        return "".join(f", {_VARIANT_SHOWN[name][0](value)}" for name, value in self.variant.items())

    @property
    def source_text(self) -> str:
        """The weights (when not ImageNet's) and the pooling (when not max), as report labels say them."""
        weights = "" if self.weights == WeightsSource.IMAGENET else f" ({self.weights} weights)"
        pooling = shown_pooling(self.backbone, self.pooling)
        return weights + (f" {pooling}-pool" if pooling and pooling != "max" else "")


def _record_features(run: RunRecord) -> FeaturesLabel:
    """A stored row's one extraction: its backbone, weights and pooling as the row's key names them."""
    features = {"layers": (), **((run.config or {}).get("features") or {}), "backbone": run.backbone or "",
                "pooling": run.pooling or ""}
    return FeaturesLabel.of(features, Weights.source_of((run.weights or WeightsSource.IMAGENET).split(":")[0]))


@dataclass(frozen=True, kw_only=True)
class ProbeLabel:
    """A probe (the linear SVM unless named) on the layers of one extraction, or of several side by side."""

    parts: tuple[FeaturesLabel, ...]
    layer_keys: str = ""  # the layer keys read, joined; "" while the features are not resolved
    norm: str = ""  # the normalisation(s) CV chooses among, or the one it chose
    splits: int = 1
    entries: tuple[str, ...] = ()  # the study's [[features]] names of the parts side by side, if any
    probe: Probe = Probe.SVM
    shots: int = 0  # a few-shot subset's training images per class; 0: the whole training split
    subset_seed: int = 0  # and the seed that drew it

    @property
    def stage_name(self) -> str:
        if self.entries:
            return f"{self.probe} {COMBINED.join(dict.fromkeys(self.entries))}"
        (part,) = self.parts
        return f"{self.probe} {part.where}/{COMBINED.join(part.layers)}"

    @property
    def file_stem(self) -> str:
        backbones = COMBINED.join(dict.fromkeys(part.backbone for part in self.parts))
        return f"{self.probe}-{backbones}-{self.layer_keys}-{self.norm}"

    @property
    def title(self) -> str:
        subset = f", {self.shots}/class, seed {self.subset_seed}" if self.shots else ""
        if len(self.parts) == 1:
            (part,) = self.parts
            return (f"{part.backbone}{part.source_text} {self.layer_keys} {self.probe.shown}{part.variant_text}"
                    f"{_splits_text(self.splits)}{subset}")
        shown = [f"{part.backbone} {'+'.join(part.layers)}" + (f" ({part.variant_text[2:]})" if part.variant else "")
                 for part in self.parts]
        return f"{' + '.join(shown)}{self.parts[0].source_text}: {self.probe.shown} side by side{_splits_text(self.splits)}"

    @property
    def classifier(self) -> str:
        return {Probe.SVM: f"LinearSVC ({self.norm or 'l2'})", Probe.LOGREG: f"logistic regression ({self.norm or 'l2'})",
                Probe.KNN: "k-NN (cosine, exp(s/T) votes)", Probe.NCM: "nearest class mean (l2)"}[self.probe]

    @classmethod
    def of_run(cls, run: RunRecord) -> ProbeLabel:
        config = run.config or {}
        parts = (tuple(FeaturesLabel.of(part) for part in config["parts"]) if config.get("parts")
                 else (_record_features(run),))
        return cls(parts=parts, layer_keys=run.layer or "", norm=str(config.get("norm", "")), splits=run.splits,
                   probe=Probe(config.get("probe", Probe.SVM)), shots=int(config.get("shots", 0)),
                   subset_seed=int(config.get("subset_seed", 0)))


def _train_text(train: TrainConfig, unfreeze: str | None) -> str:
    unfrozen = f", unfreeze {unfreeze}" if unfreeze else ""
    return f"{train.optimizer}, lr {train.lr:g}, ≤{train.epochs} epochs, patience {train.patience}{unfrozen}"


@dataclass(frozen=True, kw_only=True)
class HeadLabel:
    """A new head on a backbone: trained on its cached features, or with some of its layers (``unfreeze``)."""

    features: FeaturesLabel
    head: str
    train: TrainConfig = TrainConfig()
    unfreeze: str | None = None  # None: the backbone frozen (a head on cached features)
    splits: int = 1

    @property
    def stage_name(self) -> str:
        return f"head {self.features.backbone}{self.features.short_variant}/{self.head}"

    @property
    def file_stem(self) -> str:
        if self.unfreeze is None:
            return f"head-{self.features.backbone}-{self.head}"
        return f"network-{self.features.backbone}-{self.head}-{self.unfreeze}"

    @property
    def title(self) -> str:
        features = self.features
        return (f"{features.backbone}{features.source_text} {self.head} head ({_train_text(self.train, self.unfreeze)})"
                f"{features.variant_text}{_splits_text(self.splits)}")

    @property
    def classifier(self) -> str:
        return self.head

    @classmethod
    def of_run(cls, run: RunRecord) -> HeadLabel:
        config = run.config or {}
        return cls(features=_record_features(run), head=str(config.get("head", "")),
                   train=TrainConfig.from_dict(config.get("train") or {}), unfreeze=config.get("unfreeze"),
                   splits=run.splits)


def _sampling_text(config: BowConfig | FisherConfig) -> str:
    return f"step {config.sift.step}, sizes {'/'.join(f'{size:g}' for size in config.sift.sizes)}"


@dataclass(frozen=True, kw_only=True)
class BowLabel:
    """Bag-of-words on dense SIFT."""

    config: BowConfig
    splits: int = 1

    @property
    def variant(self) -> list[str]:
        """What sets this configuration apart besides its pyramid."""
        config = self.config
        return ["bands"] * config.bands + ([] if config.kernel == Kernel.CHI2 else [str(config.kernel)])

    @property
    def stage_name(self) -> str:
        return " ".join([f"bow L{self.config.pyramid}", *self.variant])

    @property
    def file_stem(self) -> str:
        """Also the outcome's name."""
        return "-".join([f"bow-pyramid{self.config.pyramid}" if self.config.pyramid else "bow", *self.variant])

    @property
    def title(self) -> str:
        config = self.config
        regions = f" + pyramid L{config.pyramid}" * bool(config.pyramid) + " + 3 bands" * config.bands
        details = f"{_sampling_text(config)}, {config.vocabulary.words} words{', square root' * config.sqrt}"
        return f"BoW{regions} ({details}){_splits_text(self.splits)}"

    @property
    def classifier(self) -> str:
        return "intersection-kernel SVM" if self.config.kernel == Kernel.INTERSECTION else "χ² LinearSVC"


@dataclass(frozen=True, kw_only=True)
class FisherLabel:
    """Fisher vectors of dense SIFT."""

    config: FisherConfig
    splits: int = 1

    @property
    def stage_name(self) -> str:
        return "fisher pyramid" if self.config.pyramid else "fisher"

    @property
    def file_stem(self) -> str:
        """Also the outcome's name and the store row's layer."""
        return "fisher-pyramid" if self.config.pyramid else "fisher"

    @property
    def title(self) -> str:
        config = self.config
        details = f"{_sampling_text(config)}, {config.components} Gaussians, PCA {config.pca}"
        return (f"Fisher vectors{' + pyramid 1×1+2×2+3×1' * config.pyramid} ({details})"
                f"{_splits_text(self.splits)}")

    @property
    def classifier(self) -> str:
        return "LinearSVC (power, L2)"


@dataclass(frozen=True, kw_only=True)
class ScratchLabel:
    """A network trained from scratch: one step of a series (a ladder of improvements, or a single run)."""

    arch: str
    size: int  # the images' side
    input_size: int  # after cropping
    train: TrainConfig
    normalize: bool = False
    augment: tuple[str, ...] = ()
    dropout: float = 0.0
    batchnorm: bool = False
    series: str = "single"  # or "ladder"
    step: str = ""  # the ladder's step, or "" for a single run

    @property
    def stage_name(self) -> str:
        """The whole series' stage."""
        return f"scratch {self.arch} {self.size}px" + " ladder" * (self.series == "ladder")

    @property
    def title(self) -> str:
        what = self.step or ", ".join(
            [f"lr {self.train.lr:g}", f"batch {self.train.batch_size}"] + ["normalize"] * self.normalize
            + [f"augment {'+'.join(self.augment)}"] * bool(self.augment)
            + [f"dropout {self.dropout:g}"] * bool(self.dropout) + ["batchnorm"] * self.batchnorm)
        return f"from scratch: {self.arch} {self.input_size}px {self.series} {what}".replace("single ", "")

    @property
    def classifier(self) -> str:
        return "CNN from scratch"

    @classmethod
    def of_config(cls, config: ScratchConfig, series: str, step: str = "") -> ScratchLabel:
        return cls(arch=config.arch, size=config.size, input_size=config.input_size, train=config.train,
                   normalize=config.normalize, augment=tuple(map(str, config.augment)), dropout=config.dropout,
                   batchnorm=config.batchnorm, series=series, step=step)

    @classmethod
    def of_run(cls, run: RunRecord) -> ScratchLabel:
        config = run.config or {}
        return cls(arch=run.backbone or "", size=int(config.get("size", 0)),
                   input_size=int((run.layer or "0px").removesuffix("px") or 0),
                   train=TrainConfig.from_dict(config.get("train") or {}), normalize=bool(config.get("normalize")),
                   augment=tuple(config.get("augment", ())), dropout=float(config.get("dropout") or 0.0),
                   batchnorm=bool(config.get("batchnorm")), series=str(config.get("series", "")),
                   step=str(config.get("step") or ""))


ModelLabel = ProbeLabel | HeadLabel | BowLabel | FisherLabel  # the runs that leave a model file
RunLabel = ModelLabel | ScratchLabel


def run_label(run: RunRecord) -> RunLabel:
    """The label of a stored row, from its method and config."""
    config = run.config or {}
    if run.method == Method.BOW:
        if config.get("encoding") == "fisher":
            return FisherLabel(config=FisherConfig.from_dict(config), splits=run.splits)
        return BowLabel(config=BowConfig.from_dict(config), splits=run.splits)
    if run.method == Method.SCRATCH:
        return ScratchLabel.of_run(run)
    if run.method in (Method.SVM, Method.PROBE, Method.FEWSHOT):
        return ProbeLabel.of_run(run)
    return HeadLabel.of_run(run)

