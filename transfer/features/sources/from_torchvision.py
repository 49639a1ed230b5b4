"""torchvision's classification models (``torchvision:NAME``): built by `torchvision.models.get_model`,
preprocessing and class names from their default weights' transforms and meta; the weights come from the
torch hub cache, downloaded there when missing. Stages are read off the graph (`library.py`)."""

from __future__ import annotations

from pathlib import Path

from transfer.core.errors import UserError
from transfer.features.backbones import Preprocessing, PretrainedConfig, imagenet_class_names
from transfer.features.sources.library import LibraryModel
from transfer.features.sources.reach import reachable


def names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def describe(name: str) -> LibraryModel:
    import torch
    import torchvision

    def build():
        return torchvision.models.get_model(name, weights=None)

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):  # a model published without weights
        weights = None
    url = weights.url if weights is not None else ""
    weights_name = str(weights) if weights is not None else ""
    transform = weights.transforms() if weights is not None else None

    def missing() -> str | None:
        if weights is None:
            return f"torchvision publishes no weights for {name}: pass --weights PATH or --weights random"
        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
            return None
        problem = reachable(url)
        return None if problem is None else (f"torchvision:{name}'s weights ({weights_name}) are not in the torch hub "
                                             f"cache ({torch.hub.get_dir()}/checkpoints) and cannot be downloaded ({problem})")

    def load(target) -> str:
        if weights is None:
            raise UserError(missing() or "")
        try:
            target.load_state_dict(weights.get_state_dict(progress=True))
        except Exception as error:  # no network, a damaged download
            raise UserError(f"could not load {weights_name} ({type(error).__name__}: {error}). {hint}") from error
        return f"torchvision:{weights_name}"

    hint = (f"On a machine without internet, copy {Path(url).name} into {torch.hub.get_dir()}/checkpoints from a "
            f"machine that has it, or pass --weights PATH (a {name} state_dict, .pth or .safetensors)")
    preprocessing = (Preprocessing(resize=int(transform.resize_size[0]), crop=int(transform.crop_size[0]),
                                   mean=tuple(transform.mean), std=tuple(transform.std),
                                   interpolation=transform.interpolation.value)
                     if transform is not None and hasattr(transform, "crop_size") else Preprocessing())
    categories = weights.meta.get("categories") if weights is not None else None
    return LibraryModel(
        name=f"torchvision:{name}",
        build=build,
        pretrained=PretrainedConfig(load=load, missing=missing, offline_hint=hint, preprocessing=preprocessing,
                                    name=weights_name or name,
                                    class_names=(lambda: list(categories)) if categories else imagenet_class_names),
        prefix_tokens=lambda built: int(getattr(built, "class_token", None) is not None),  # ViTs: the class token
        fixed_input_size=lambda built: hasattr(built, "image_size"),  # ViTs: their position embeddings' size
    )
