"""timm's models (``timm:NAME``, ``timm:NAME.TAG``): built by `timm.create_model`, their pretrained
configuration (preprocessing, classifier, first convolution) and `feature_info` (the stages) as timm
records them; pretrained weights come from the Hugging Face hub cache, downloaded there when missing."""

from __future__ import annotations

import math

from transfer.core.errors import UserError
from transfer.features.backbones import Preprocessing, PretrainedConfig, imagenet_class_names
from transfer.features.sources.library import LibraryModel
from transfer.features.sources.reach import reachable

HUB = "https://huggingface.co"


def names() -> list[str]:
    import timm

    return timm.list_models()


def _tracer() -> dict:
    from timm.models import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())}


def _cached_file(hub_id: str) -> str | None:
    """The weights file of ``hub_id`` in the Hugging Face hub cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    found = (try_to_load_from_cache(hub_id, file) for file in ("model.safetensors", "pytorch_model.bin"))
    return next((path for path in found if isinstance(path, str)), None)


def describe(name: str) -> LibraryModel:
    import timm

    def build():
        return timm.create_model(name, pretrained=False)

    # The registered configuration, without building the model: `library_backbone` builds it once
    known = timm.models.get_pretrained_cfg(name)
    cfg = known.to_dict() if known is not None else build().pretrained_cfg
    hub_id = cfg.get("hf_hub_id") or ""
    weights_name = hub_id or cfg.get("url") or name
    crop = int(cfg["input_size"][-1])

    def missing() -> str | None:
        if hub_id and _cached_file(hub_id):
            return None
        problem = reachable(HUB if hub_id else cfg.get("url", ""))
        return None if problem is None else (f"timm:{name}'s pretrained weights ({weights_name}) are not in the "
                                             f"Hugging Face hub cache and cannot be downloaded ({problem})")

    def load(target) -> str:
        # A cached file is read as a local one: the hub client would first ask the network whether it is
        # current, retrying for most of a minute on a machine without one.
        cached = _cached_file(hub_id) if hub_id else None
        problem = None if cached else missing()
        if problem:
            raise UserError(f"{problem}. {hint}")
        try:
            timm.models.load_pretrained(target, pretrained_cfg={**cfg, "file": cached} if cached else cfg)
        except Exception as error:  # no network, a hub error, no weights published for this name
            raise UserError(f"could not load timm:{name}'s pretrained weights {weights_name} "
                            f"({type(error).__name__}: {error}). {hint}") from error
        return f"timm:{weights_name}"

    hint = (f"On a machine without internet, copy its Hugging Face hub cache folder (models--{hub_id.replace('/', '--')} "
            f"under ~/.cache/huggingface/hub) from a machine that has it, or pass --weights PATH (a {name} state_dict, "
            f".pth or .safetensors)") if hub_id else f"pass --weights PATH (a {name} state_dict, .pth or .safetensors)"
    preprocessing = Preprocessing(resize=math.floor(crop / cfg.get("crop_pct", 0.875)), crop=crop,
                                  mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                                  std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                                  interpolation=cfg.get("interpolation", "bicubic"))
    classes = int(cfg.get("num_classes", 1000))
    return LibraryModel(
        name=f"timm:{name}",
        build=build,
        pretrained=PretrainedConfig(
            load=load, missing=missing, offline_hint=hint, preprocessing=preprocessing, name=weights_name,
            class_names=imagenet_class_names if classes == 1000 else lambda: [f"class {i}" for i in range(classes)]),
        classifier=cfg.get("classifier", ""),
        first_conv=cfg.get("first_conv", ""),
        stages=lambda built: tuple(info["module"] for info in getattr(built, "feature_info", [])),
        prefix_tokens=lambda built: int(getattr(built, "num_prefix_tokens", 0)),
        fixed_input_size=lambda _: bool(cfg.get("fixed_input_size", False)),
        tracer=_tracer,
    )
