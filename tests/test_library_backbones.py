"""Backbones from timm and torchvision by name (random weights, built offline): the cached features equal
the library's own forward on the same preprocessed tensors, tokens reduce as documented, weights files
key the cache, and heads and `predict` work on them."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.core.config import ConfigError
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.backbones import Weights, build_model, weights_id
from transfer.features.cache import read_features
from transfer.features.extract import extract
from transfer.features.forward import ImageFiles
from transfer.features.registry import get_backbone
from transfer.features.spec import FeatureSpec, RunOptions

pytest.importorskip("timm")

RUN = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
VIT = "timm:vit_tiny_patch16_224"
runner = CliRunner()


def _cached(small_data: Path, cache_dir: Path, features: FeatureSpec) -> tuple[np.ndarray, torch.Tensor]:
    """(the cached training features of the one layer of ``features``, the preprocessed training images)."""
    dataset = load_dataset(small_data)
    outcome = extract(dataset, features, cache_dir, RUN)
    (key,) = features.layer_nodes()
    split = read_features(outcome.path, key, dataset).splits["train"]
    spec = get_backbone(features.backbone)
    images = ImageFiles([small_data / path for path in split.paths], spec.pretrained.preprocessing)
    return split.features, spec.pretrained.preprocessing.normalise(torch.cat([images[i][0] for i in range(len(images))]))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _timm_pre_logits(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _torchvision_pre_logits(model, x):
    model.fc = torch.nn.Identity()
    return model(x)


def _tokens(model, x):
    tokens = model.forward_features(x)  # after the final norm: the `norm` module's output
    return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(1)], dim=1)


@pytest.mark.parametrize("backbone, layer, tokens, forward", [
    ("timm:resnet18", "pre_logits", None, _timm_pre_logits),
    ("torchvision:resnet18", "pre_logits", None, _torchvision_pre_logits),
    (VIT, "pre_logits", None, _timm_pre_logits),
    (VIT, "norm", "cls+mean", _tokens),
])
def test_cached_features_equal_the_librarys_own_forward(small_data, cache_dir, backbone, layer, tokens, forward):
    features = FeatureSpec(backbone=backbone, weights="random", layers=(layer,), tokens=tokens, precision="fp32")
    cached, images = _cached(small_data, cache_dir, features)
    model = build_model(get_backbone(backbone), Weights.parse("random"))
    with torch.inference_mode():
        own = forward(model, images).numpy()
    assert cached.shape == own.shape
    assert _cosines(cached, own).min() >= 0.99999


def test_tokens_give_the_documented_widths(small_data, cache_dir):
    dataset = load_dataset(small_data)
    widths = {}
    for tokens in ("cls", "mean", "cls+mean"):
        features = FeatureSpec(backbone=VIT, weights="random", layers=("stage12",), tokens=tokens, precision="fp32")
        outcome = extract(dataset, features, cache_dir, RUN)
        widths[tokens] = outcome.shapes["train"][f"stage12:{tokens}"]
    assert widths == {"cls": (12, 192), "mean": (12, 192), "cls+mean": (12, 384)}
    assert FeatureSpec(backbone=VIT, weights="random", layers=("stage12",)).tokens == "cls"  # the default


def test_options_that_do_not_fit_the_layer_are_messages():
    with pytest.raises(ConfigError, match="give tokens: use --tokens"):
        FeatureSpec(backbone=VIT, weights="random", layers=("stage12",), spatial="avg")
    with pytest.raises(ConfigError, match="--tokens reduces a transformer's token outputs"):
        FeatureSpec(backbone="timm:resnet18", weights="random", tokens="cls")
    with pytest.raises(ConfigError, match="give vectors"):
        FeatureSpec(backbone="timm:resnet18", weights="random", spatial="avg")
    with pytest.raises(ConfigError, match="pooling variants replace VGG16"):
        FeatureSpec(backbone="timm:resnet18", weights="random", pooling="avg")
    with pytest.raises(ConfigError, match="takes 224×224 images only"):
        FeatureSpec(backbone=VIT, weights="random", image_size=64)


def test_unknown_names_get_the_closest_matches():
    with pytest.raises(ConfigError, match="closest: timm:resnet18"):
        get_backbone("timm:resnet_18")
    with pytest.raises(ConfigError, match="unknown model library 'keras'"):
        get_backbone("keras:resnet50")
    with pytest.raises(ConfigError, match=r"unknown layer 'layer4.1.act3' \(closest: layer4.1.act2.*\) for timm:resnet18"):
        FeatureSpec(backbone="timm:resnet18", weights="random", layers=("layer4.1.act3",))
    result = runner.invoke(app, ["layers", "--backbone", "torchvision:resnet_50"])  # the app prints it, exit 2
    assert isinstance(result.exception, ConfigError) and "closest: torchvision:resnet50" in str(result.exception)


def test_any_graph_node_is_a_layer_and_stages_are_named(small_data, cache_dir):
    spec = get_backbone("torchvision:resnet18")
    assert [spec.taps.layers[f"stage{i}"].node for i in range(2, 6)] == [f"layer{i}.1.relu_1" for i in range(1, 5)]
    features = FeatureSpec(backbone="torchvision:resnet18", weights="random", layers=("layer3", "stage4"),
                           spatial="avg", image_size=64, precision="fp32")
    dataset = load_dataset(small_data)
    outcome = extract(dataset, features, cache_dir, RUN)
    module, stage = (read_features(outcome.path, key, dataset).splits["train"].features for key in features.layer_nodes())
    assert module.shape == (12, 256) and np.array_equal(module, stage)  # a module's output is its last node's


def test_a_weights_file_keys_the_cache_and_a_foreign_one_is_a_message(tmp_path):
    from safetensors.torch import save_file

    spec = get_backbone("timm:resnet18")
    state = build_model(spec, Weights.parse("random")).state_dict()
    changed = {name: value + 1 if value.is_floating_point() else value for name, value in state.items()}
    torch.save(state, tmp_path / "random.pth")
    save_file({k: v.contiguous() for k, v in changed.items()}, tmp_path / "changed.safetensors")
    ids = {weights_id(spec, Weights.parse(str(tmp_path / name))) for name in ("random.pth", "changed.safetensors")}
    assert len(ids) == 2 and weights_id(spec, Weights.parse("random")) not in ids
    loaded = build_model(spec, Weights.parse(str(tmp_path / "changed.safetensors"))).state_dict()
    assert torch.equal(loaded["fc.weight"], changed["fc.weight"])
    foreign = build_model(get_backbone(VIT), Weights.parse("random")).state_dict()
    save_file({k: v.contiguous() for k, v in foreign.items()}, tmp_path / "foreign.safetensors")
    with pytest.raises(UserError, match=r"of its weights missing \(e.g. conv1.weight\).*names it does not have"):
        build_model(spec, Weights.parse(str(tmp_path / "foreign.safetensors")))


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_weights_file_holding_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": _Touch(marker)}))
    with pytest.raises(UserError, match="could run code"):
        build_model(get_backbone("timm:resnet18"), Weights.parse(str(evil)))
    assert not marker.exists()


@pytest.mark.parametrize("backbone", ["timm:resnet18", "torchvision:resnet18"])
def test_a_head_trains_on_a_library_model_and_predict_reads_its_file(small_data, cache_dir, backbone):
    result = runner.invoke(app, ["finetune", "--data", str(small_data), "--backbone", backbone, "--weights", "random",
                                 "--image-size", "64", "--head", "fc", "--epochs", "2", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    (model_file,) = (cache_dir / "models").glob("head-*.skops")
    predicted = runner.invoke(app, ["predict", str(model_file), str(small_data / "test"), "--format", "csv"])
    assert predicted.exit_code == 0, predicted.output
    assert len(predicted.stdout.strip().splitlines()) == 1 + 9  # a header and one line per test image; notes go to stderr


@pytest.mark.parametrize("backbone", ["timm:resnet18", VIT, "torchvision:resnet18"])
def test_the_preprocessing_is_the_librarys_own(small_data, backbone):
    import timm
    import torchvision
    from PIL import Image

    image = Image.open(small_data / "test" / "beta" / "img_000.png").convert("RGB")
    spec = get_backbone(backbone)
    library, name = backbone.split(":")
    if library == "timm":
        model = timm.create_model(name, pretrained=False)
        theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    else:
        theirs = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    assert torch.allclose(spec.pretrained.preprocessing.transform()(image), theirs(image), atol=1e-6)


def test_pretrained_weights_in_the_hub_cache_are_used_without_a_network(tmp_path, monkeypatch):
    import huggingface_hub
    from safetensors.torch import save_file

    spec = get_backbone("timm:resnet18")
    published = {name: value + 1 if value.is_floating_point() else value
                 for name, value in build_model(spec, Weights.parse("random")).state_dict().items()}
    repo = tmp_path / f"models--{spec.pretrained.name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(published, repo / "snapshots" / "abc123" / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("transfer.features.sources.from_timm.reachable", lambda url: pytest.fail(f"asked {url}"))
    assert spec.pretrained.missing() is None
    loaded = build_model(spec, Weights.parse("pretrained")).state_dict()
    assert torch.equal(loaded["conv1.weight"], published["conv1.weight"])
    assert weights_id(spec, Weights.parse("imagenet")) == "imagenet:timm/resnet18.a1_in1k"


def test_a_study_on_a_library_transformer_reads_tokens_and_trains_a_head(tmp_path, small_data, cache_dir):
    study = tmp_path / "vit.toml"
    study.write_text(f"""
[data]
path = "{small_data}"

[[features]]
backbone = "{VIT}"
weights = "random"
layers = ["pre_logits", "stage12"]
tokens = "cls+mean"

[svm]
c_grid = [0.1, 1]
cv = 2

[heads]
names = ["fc"]
epochs = 2
""")
    result = runner.invoke(app, ["run", str(study), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "4 stage(s)" in result.output and "4 ran" in result.output
    dataset = load_dataset(small_data)
    (path,) = cache_dir.glob("timm_vit_tiny_patch16_224-*.h5")
    assert read_features(path, "stage12:cls+mean", dataset).splits["train"].features.shape == (12, 384)
