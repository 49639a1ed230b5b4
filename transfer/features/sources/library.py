"""What a model library says of one model (`LibraryModel`), and the backbone entry derived from it: the
named layer taps (stages, ``pre_logits``, ``logits``), the head's place and the unfreeze groups, read off
the built model's traced graph so that no library module has to spell them out per architecture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from transfer.core.config import ConfigError
from transfer.features.backbones import (
    RANDOM_SEED,
    Architecture,
    BackboneSpec,
    Graph,
    Layer,
    LayerTaps,
    PretrainedConfig,
    remember_graph,
    trace_graph,
)

if TYPE_CHECKING:
    import torch

PRE_LOGITS = "pre_logits"  # the pooled features the classifier reads: every library backbone's default layer
LOGITS = "logits"


@dataclass(frozen=True, kw_only=True)
class LibraryModel:
    """One model as its library describes it."""

    name: str  # as users write it: "timm:resnet50"
    build: Callable[[], torch.nn.Module]  # the architecture with random weights
    pretrained: PretrainedConfig  # the published weights, their preprocessing and class names
    classifier: str = ""  # the module giving the class scores; "": the model's last linear layer
    first_conv: str = ""  # the module whose maps `transfer inspect --maps` shows; "": the first convolution
    # The modules (or nodes) whose outputs are stage1 … stageN, read off the built model; (): off its graph
    stages: Callable[[torch.nn.Module], tuple[str, ...]] = lambda model: ()
    # A transformer's tokens before the patch tokens (class token, registers), read off the built model
    prefix_tokens: Callable[[torch.nn.Module], int] = lambda model: 0
    fixed_input_size: Callable[[torch.nn.Module], bool] = lambda model: False  # takes its own crop size only
    tracer: Callable[[], dict] = dict  # torchvision FX tracer options (modules and functions not to trace into)


def _last_linear(model: torch.nn.Module, within: str) -> str:
    from torch import nn

    root = model.get_submodule(within) if within else model
    linears = [name for name, module in root.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError("backbone", f"{within or 'the model'} has no linear classifier to read pooled features "
                                      f"from or to replace with a head")
    return ".".join(filter(None, (within, linears[-1])))


def _first_conv(model: torch.nn.Module) -> str:
    from torch import nn

    return next((name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)), "")


@dataclass(frozen=True)
class _Graph:
    """The traced graph in order: each node's qualified name and the parameters it reads."""

    names: list[str]
    parameters: list[list[str]]
    classifier_input: dict[str, str]  # a call of a module -> the node feeding it

    @classmethod
    def trace(cls, model: torch.nn.Module, tracer: dict) -> _Graph:
        from torchvision.models.feature_extraction import NodePathTracer

        path_tracer = NodePathTracer(**tracer)
        graph = path_tracer.trace(model)
        qualname = path_tracer.node_to_qualname
        names, parameters, inputs = [], [], {}
        owned = dict(model.named_parameters())
        for node in graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            name = qualname.get(node, node.name)
            names.append(name)
            if node.op == "call_module":
                module = model.get_submodule(str(node.target))
                parameters.append([f"{node.target}.{p}" for p, _ in module.named_parameters()])
                if node.args and node.args[0] in qualname:
                    inputs[str(node.target)] = qualname[node.args[0]]
            else:
                parameters.append([str(node.target)] if node.op == "get_attr" and str(node.target) in owned else [])
        return cls(names, parameters, inputs)

    def last_index(self, stage: str) -> int:
        """Where a stage's output is computed: its node, or the last node inside its module."""
        return max(i for i, name in enumerate(self.names) if name == stage or name.startswith(stage + "."))

    def parameters_between(self, first: int, last: int | None = None) -> tuple[str, ...]:
        """The parameters read after node ``first`` up to node ``last`` (None: to the end)."""
        stop = None if last is None else last + 1
        return tuple(dict.fromkeys(p for params in self.parameters[first + 1:stop] for p in params))


def _stages_from_shapes(model: torch.nn.Module, shapes: Graph, graph: _Graph) -> tuple[str, ...]:
    """Stage outputs of a model whose library does not list them: a transformer's blocks (the longest run
    of identical blocks giving tokens); else the last node at each resolution of the maps, above 1×1."""
    from torch import nn

    containers = [(name, list(module.named_children())) for name, module in model.named_modules()
                  if isinstance(module, (nn.Sequential, nn.ModuleList))]
    blocks = [(name, children) for name, children in containers
              if len(children) > 1 and len({type(child) for _, child in children}) == 1
              and all(f"{name}.{child}" in shapes and shapes[f"{name}.{child}"].layer().tokens for child, _ in children)]
    if blocks:
        name, children = max(blocks, key=lambda block: len(block[1]))
        return tuple(f"{name}.{child}" for child, _ in children)
    maps = [name for name in graph.names if name in shapes and len(shapes[name].shape) == 3
            and shapes[name].shape[1:] != (1, 1)]
    return tuple(a for a, b in zip(maps, [*maps[1:], None]) if b is None or shapes[a].shape[1:] != shapes[b].shape[1:])


def library_backbone(described: LibraryModel) -> BackboneSpec:
    """The registry entry of a library model: built once (random weights) to read its graph."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = described.build().eval()
    tracer = described.tracer()
    graph = _Graph.trace(model, tracer)
    shapes = trace_graph(model, tracer, described.pretrained.preprocessing.crop)
    classifier = _last_linear(model, described.classifier)
    stages = described.stages(model) or _stages_from_shapes(model, shapes, graph)
    ends = [graph.last_index(stage) for stage in stages]
    layers = {f"stage{i}": replace(shapes[stage].layer(), parameter_modules=graph.parameters_between(start, end))
              for i, (stage, start, end) in enumerate(zip(stages, [-1, *ends[:-1]], ends), start=1)}
    pre_logits = graph.classifier_input.get(classifier)
    if pre_logits is None:
        raise ConfigError("backbone", f"{described.name}: its classifier {classifier} is not called in its traced graph")
    layers[PRE_LOGITS] = Layer(pre_logits, False)
    layers[LOGITS] = Layer(classifier, False)
    unfreeze = {f"stage{i}": graph.parameters_between(end) for i, end in enumerate(ends[:-1], start=2)}
    spec = BackboneSpec(
        name=described.name,
        architecture=Architecture(
            build=described.build,
            prefix_tokens=described.prefix_tokens(model),
            fixed_input_size=described.fixed_input_size(model),
            tracer=described.tracer,
            fc_head_input=PRE_LOGITS,
            fc_head_module=classifier,
            mlp_head_input=PRE_LOGITS,
            mlp_head_module=classifier,
            unfreeze_groups={**unfreeze, "all": ("",)},
        ),
        pretrained=described.pretrained,
        taps=LayerTaps(layers=layers, default=PRE_LOGITS, logits=LOGITS, first_maps=described.first_conv or _first_conv(model)),
    )
    remember_graph(spec, shapes)
    return spec
