"""Feature selections and how to run them: the settings dataclasses of an extraction, each rule checked once."""

from __future__ import annotations

from dataclasses import dataclass, replace

from transfer.core.choices import Device, Engine, Pooling, Precision, Runtime, Spatial, Tokens, View
from transfer.core.config import ConfigError, choice, require
from transfer.features.backbones import check_pooling
from transfer.features.cache import layer_key
from transfer.features.forward import Reduction
from transfer.features.registry import get_backbone


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Which features: the part of a command line that selects an extraction and its layers. Every rule
    of a selection is checked here, once, on construction."""

    backbone: str = "vgg16"
    weights: str = "imagenet"  # imagenet, random or a state_dict file (checked where it is loaded)
    layers: tuple[str, ...] = ()  # empty: the backbone's default layer (its pooled features)
    spatial: Spatial = Spatial.FLATTEN
    pooling: Pooling = Pooling.MAX
    precision: Precision = Precision.AUTO
    color: bool = False
    image_size: int | None = None  # centre-crop size; None: the backbone's own (224)
    views: View = View.CENTRE  # test-time augmentation: the features are the mean over these views
    tokens: Tokens | None = None  # a transformer's token layers; None: the class token (the patches' mean without one)

    def __post_init__(self) -> None:
        spec = get_backbone(self.backbone)
        object.__setattr__(self, "layers", tuple(self.layers) or (spec.taps.default,))
        object.__setattr__(self, "spatial", choice(Spatial, self.spatial, "spatial"))
        object.__setattr__(self, "pooling", choice(Pooling, self.pooling, "pooling"))
        object.__setattr__(self, "precision", choice(Precision, self.precision, "precision"))
        object.__setattr__(self, "views", choice(View, self.views, "views"))
        check_pooling(spec, self.pooling)
        require(self.image_size is None or self.image_size >= 32, "image_size",
                f"image_size must be at least 32, got {self.image_size}")
        require(self.image_size in (None, spec.pretrained.preprocessing.crop) or not spec.architecture.fixed_input_size, "image_size",
                f"{spec.name} takes {spec.pretrained.preprocessing.crop}×{spec.pretrained.preprocessing.crop} images only (its position "
                f"embeddings are of that size): leave image_size out")
        layers = [spec.layer(name) for name in self.layers]
        token_layers = [name for name, layer in zip(self.layers, layers) if layer.tokens]
        shown = ", ".join(self.layers)
        if self.tokens is not None:
            require(bool(token_layers), "tokens", f"--tokens reduces a transformer's token outputs (tokens × width); "
                                                  f"{shown} of {spec.name} give none")
            object.__setattr__(self, "tokens", choice(Tokens, self.tokens, "tokens"))
        elif token_layers:
            object.__setattr__(self, "tokens", Tokens.CLS if spec.architecture.prefix_tokens else Tokens.MEAN)
        require(self.tokens not in (Tokens.CLS, Tokens.CLS_MEAN) or spec.architecture.prefix_tokens > 0, "tokens",
                f"{spec.name} has no class token: use --tokens mean")
        require(self.spatial == Spatial.FLATTEN or not token_layers, "spatial",
                f"--spatial reduces a CNN's maps; {', '.join(token_layers)} of {spec.name} give tokens: use --tokens "
                f"{'|'.join(Tokens)}")
        require(self.spatial == Spatial.FLATTEN or any(layer.spatial for layer in layers), "spatial",
                f"--spatial {self.spatial} reduces maps (channels × height × width); {shown} of {spec.name} give vectors")

    def for_layers(self, layers: tuple[str, ...], plain: bool = False) -> FeatureSpec:
        """This selection on ``layers``, its reductions of maps and tokens kept where those layers take them
        (``plain``: never; the layers heads read are vectors)."""
        found = [get_backbone(self.backbone).layer(name) for name in layers]
        spatial = self.spatial if not plain and any(layer.spatial for layer in found) else Spatial.FLATTEN
        tokens = self.tokens if not plain and any(layer.tokens for layer in found) else None
        return replace(self, layers=tuple(layers), spatial=spatial, tokens=tokens)

    def layer_nodes(self) -> dict[str, str]:
        """Each layer's key in the cache (its name, with the reduction where there is a choice) -> its graph node."""
        spec = get_backbone(self.backbone)
        nodes = {}
        for name in self.layers:
            layer = spec.layer(name)
            reduced = self.tokens if layer.tokens else self.spatial if layer.spatial else Spatial.FLATTEN
            nodes[layer_key(name, str(reduced))] = layer.node
        return nodes

    def reduction(self) -> Reduction:
        return Reduction(self.spatial, self.tokens, get_backbone(self.backbone).architecture.prefix_tokens)


def distinguishing(features: dict) -> dict:
    """The fields of a `FeatureSpec` (as a dict, e.g. a stored run's) that set its features apart from the
    backbone's plain ones, where they differ from their defaults: what stage names and report labels show."""
    defaults = FeatureSpec()
    return {name: features[name] for name in ("views", "image_size", "color")
            if features.get(name, getattr(defaults, name)) != getattr(defaults, name)}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run an extraction; none of this changes the features."""

    device: Device = Device.AUTO
    batch_size: int = 32
    workers: int | None = None  # None: a default that suits the device and core count
    strict: bool = False
    progress: bool = True
    engine: Engine = Engine.LOCAL
    runtime: Runtime = Runtime.AUTO  # of the forward pass; the features are the same with each
    address: str | None = None  # the Ray cluster to join; None: $RAY_ADDRESS, else a local one
    actors: int | None = None  # Ray actors; None: one per CPU of the cluster
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", choice(Device, self.device, "device"))
        object.__setattr__(self, "engine", choice(Engine, self.engine, "engine"))
        object.__setattr__(self, "runtime", choice(Runtime, self.runtime, "runtime"))
        require(self.batch_size >= 1, "batch_size", f"batch_size must be at least 1, got {self.batch_size}")
        check_workers(self.workers)
        require(self.actors is None or self.actors >= 1, "actors", f"actors must be at least 1, got {self.actors}")
        require(self.gpus_per_actor >= 0, "gpus_per_actor",
                f"gpus_per_actor must be 0 (CPU actors) or more, got {self.gpus_per_actor}")
        require(self.engine == Engine.RAY or not (self.address or self.actors or self.gpus_per_actor), "engine",
                "address, actors and gpus_per_actor are for the ray engine")


def check_workers(workers: int | None) -> None:
    require(workers is None or workers >= 0, "workers",
            f"workers must be 0 (load images in the main process) or more, got {workers}")


def check_parts(parts: list[FeatureSpec]) -> None:
    if len(parts) < 2:
        raise ConfigError("features", f"a combination puts several extractions side by side: name two or more "
                                      f"(got {len(parts)})")


def check_combination(layers: tuple[str, ...]) -> None:
    if len(set(layers)) < 2:
        raise ConfigError("combine", f"combining puts several layers side by side: give two or more (got "
                                     f"{', '.join(layers)}), e.g. conv_head,avgpool")
