import gc
import importlib.util
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from transfer.core.errors import UserError
from transfer.features.backbones import (
    BACKBONES,
    Weights,
    build_model,
    describe_layers,
    feature_extractor,
    weights_id,
)
from transfer.features.registry import get_backbone

VGG = get_backbone("vgg16")
POOL_INDICES = [4, 9, 16, 23, 30]


@pytest.fixture(scope="module")
def vgg_random():
    return build_model(VGG, Weights("random"))


def test_every_vgg16_layer_name_returns_that_torchvision_module_output(vgg_random):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    extractor = feature_extractor(vgg_random, [layer.node for layer in VGG.taps.layers.values()])
    with torch.inference_mode():
        outputs = extractor(x)
        # By hand: the Sequential prefixes of torchvision's VGG16.
        features = vgg_random.features
        expected = {f"features.{i}": features[: i + 1](x) for i in range(len(features))}
        top = torch.flatten(vgg_random.avgpool(features(x)), 1)
        classifier = vgg_random.classifier
        expected.update({f"classifier.{i}": classifier[: i + 1](top) for i in (0, 1, 3, 4, 6)})
    assert len(VGG.taps.layers) == 13 * 2 + 5 + 5
    for name, layer in VGG.taps.layers.items():
        torch.testing.assert_close(outputs[layer.node], expected[layer.node], msg=name)
    # the names mean what people mean by them
    assert isinstance(features[int(VGG.taps.layers["conv5_3"].node.split(".")[1])], nn.Conv2d)
    assert isinstance(features[int(VGG.taps.layers["relu5_3"].node.split(".")[1])], nn.ReLU)
    assert VGG.taps.layers["relu7"].node == "classifier.4" and VGG.taps.layers["fc8"].node == "classifier.6"
    assert [VGG.taps.layers[f"pool{i}"].node for i in range(1, 6)] == [f"features.{i}" for i in POOL_INDICES]
    # relu7 is exactly "classifier up to its second ReLU" on flattened pool5
    with torch.inference_mode():
        pool5 = outputs["features.30"]
        relu7 = torch.relu(classifier[3](torch.relu(classifier[0](torch.flatten(vgg_random.avgpool(pool5), 1)))))
    torch.testing.assert_close(outputs["classifier.4"], relu7)


def test_a_requested_conv_output_survives_the_in_place_relu_after_it_and_the_others_stay_in_place():
    model = build_model(VGG, Weights("random"))
    conv = VGG.taps.layers["conv4_1"].node
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model.features[: int(conv.split(".")[1]) + 1](x)
        outputs = feature_extractor(model, [conv, VGG.taps.layers["relu7"].node])(x)
    torch.testing.assert_close(outputs[conv], expected)
    assert (outputs[conv] < 0).any()  # pre-activation: the ReLU did not overwrite it
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    following = f"features.{int(conv.split('.')[1]) + 1}"
    assert [name for name, m in relus.items() if not m.inplace] == [following]


def test_layers_after_the_deepest_requested_node_are_freed_with_the_model():
    model = build_model(VGG, Weights("random"))
    classifier = weakref.ref(model.classifier)
    gc.disable()  # as in a long extraction, where the cycle collector may not run for minutes
    try:
        extractor = feature_extractor(model, [VGG.taps.layers["pool5"].node])
        del model
        assert classifier() is None
    finally:
        gc.enable()
    assert sum(p.numel() for p in extractor.parameters()) == 14_714_688  # VGG16's 13 convolutions


@pytest.mark.parametrize("pooling,expected", [("avg", nn.AvgPool2d), ("sum", nn.LPPool2d), ("l2", nn.LPPool2d)])
def test_pooling_variants_change_exactly_the_five_pooling_layers(vgg_random, pooling, expected):
    variant = build_model(VGG, Weights("random"), pooling)
    before = dict(vgg_random.named_modules())
    after = dict(variant.named_modules())
    changed = sorted(name for name in before if type(before[name]) is not type(after[name]))
    assert changed == sorted(f"features.{i}" for i in POOL_INDICES)
    for i in POOL_INDICES:
        assert isinstance(after[f"features.{i}"], expected)
    # weights untouched
    for (n1, p1), (n2, p2) in zip(vgg_random.named_parameters(), variant.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.rand(1, 8, 4, 4)
    pool = after["features.4"]
    reference = {"avg": nn.functional.avg_pool2d(x, 2), "sum": 4 * nn.functional.avg_pool2d(x, 2),
                 "l2": (4 * nn.functional.avg_pool2d(x * x, 2)).sqrt()}[pooling]
    torch.testing.assert_close(pool(x), reference)


def test_layer_listing_has_shapes_and_the_vgg16_parameter_total():
    infos, total = describe_layers(VGG)
    assert total == 138_357_544
    by_name = {info.name: info for info in infos}
    assert by_name["pool5"].shape == (512, 7, 7)
    assert by_name["relu7"].shape == (4096,)
    assert by_name["fc6"].parameters == 25088 * 4096 + 4096


def test_unknown_names_say_what_exists():
    with pytest.raises(UserError, match="choose one of: vgg16"):
        get_backbone("resnet")
    with pytest.raises(UserError, match="pooling variants replace VGG16"):
        build_model(BACKBONES["efficientnet_lite0"], Weights("random"), "avg")
    with pytest.raises(UserError, match=r"expected imagenet \(or pretrained\), random or an existing state_dict"):
        Weights.parse("/no/such/file.pth")


def test_weights_file_identity_is_its_content(tmp_path):
    lite0 = get_backbone("efficientnet_lite0")  # what this checks is the same for every backbone; Lite0's file is small
    saved = {k: v + 1 for k, v in build_model(lite0, Weights("random")).state_dict().items()}  # not the random weights
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    first = weights_id(lite0, Weights.parse(str(path)))
    loaded = build_model(lite0, Weights.parse(str(path))).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    other = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in saved.items()}, other)
    assert weights_id(lite0, Weights.parse(str(other))) != first
    bad = tmp_path / "bad.pth"
    torch.save({"nope": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="is not a efficientnet_lite0 state_dict"):
        build_model(lite0, Weights.parse(str(bad)))


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="lite0 extra not installed")
def test_lite0_has_pooled_features_and_logits():
    infos, total = describe_layers(BACKBONES["efficientnet_lite0"])
    shapes = {info.name: info.shape for info in infos}
    assert shapes["avgpool"] == (1280, 1, 1) and shapes["logits"] == (1000,)
    assert 4_000_000 < total < 5_000_000


@pytest.mark.parametrize("backbone, crop, parameters", [("efficientnet_lite1", 240, 5_416_680), ("efficientnet_lite2", 260, 6_092_072)])
def test_lite1_and_lite2_are_registry_entries_that_every_command_uses(small_data, tmp_path, backbone, crop, parameters):
    """One registry entry each: extraction, SVM, a head on cached features, end-to-end training and
    predict all work from its facts alone (random weights, 32-pixel crops)."""
    from transfer.classifiers.heads import EndToEnd
    from transfer.classifiers.settings import GridConfig
    from transfer.classifiers.training import TrainConfig
    from transfer.core.paths import CacheFolder
    from transfer.data.datasets import load_dataset
    from transfer.features.extract import extract
    from transfer.features.spec import FeatureSpec, RunOptions
    from transfer.runs.jobs import run_head, run_svm
    from transfer.runs.labels import run_label
    from transfer.runs.models import load_model
    from transfer.runs.predict import predict
    from transfer.runs.store import ResultsStore

    spec = BACKBONES[backbone]
    assert (spec.pretrained.preprocessing.crop, spec.pretrained.preprocessing.resize) == (crop, crop + 32)
    infos, total = describe_layers(spec, 64)
    assert total == parameters
    assert {info.name: info.shape for info in infos}["avgpool"] == (1280, 1, 1)
    dataset = load_dataset(small_data)
    features = FeatureSpec(backbone=backbone, weights="random", layers=("avgpool",), image_size=32, precision="fp32")
    options = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
    assert extract(dataset, features, tmp_path, options).images == 21
    (svm,) = run_svm(dataset, features, tmp_path, GridConfig(c_grid=(1.0,), cv=2, jobs=1))
    config = TrainConfig(epochs=1, val_fraction=0.25, batch_size=3)  # 9 fit images: no batch of one for batch norm
    head = run_head(dataset, features, "fc", config, tmp_path, options)
    assert head.layer == "avgpool"
    network = run_head(dataset, features, "fc", config, tmp_path, options, end_to_end=EndToEnd(unfreeze="all", backbone_lr_scale=0.1, workers=0))
    for model in (svm.model_path, head.model_path, network.model_path):
        assert len(predict(model, [small_data / "test"], device="cpu")) == 9
    labels = [f"svm-{backbone}-avgpool-l2", f"head-{backbone}-fc3", f"network-{backbone}-fc3-all"]  # as before typed model files
    paths = [Path(outcome.model_path) for outcome in (svm, head, network)]
    assert [path.name.rsplit("-", 1)[0] for path in paths] == labels
    assert [load_model(path).label().file_stem for path in paths] == labels
    runs = {run.model_path: run for run in ResultsStore(CacheFolder(tmp_path).results_path).runs()}
    assert [run_label(runs[str(path)]).file_stem for path in paths] == labels  # the stored rows say the same


@pytest.mark.parametrize("views", ["centre", "flip", "5crops", "10crops"])
@pytest.mark.parametrize("color", [False, True])
def test_views_equal_torchvisions_transforms_of_each_view(views, color, tmp_path):
    """The uint8 views, normalised a batch at once (a grayscale band spread to three), are bit for bit what
    torchvision's per-image resize, crop, ToTensor and Normalize give for the RGB image."""
    from PIL import Image
    from torchvision import transforms

    from transfer.data.images import read_bands, read_image
    from transfer.features.backbones import Preprocessing

    pixels = torch.randint(0, 256, (75, 90, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "image.png")
    preprocessing = Preprocessing(resize=41, crop=32, views=views, color=color)  # odd margins: crops of the mirror image are not mirrored crops
    image = read_image(tmp_path / "image.png", color)
    resized = preprocessing._resize()(image)
    crops = {"centre": lambda x: [transforms.CenterCrop(32)(x)],
             "flip": lambda x: [transforms.CenterCrop(32)(x), transforms.functional.hflip(transforms.CenterCrop(32)(x))],
             "5crops": transforms.FiveCrop(32), "10crops": transforms.TenCrop(32)}[views](resized)
    expected = torch.stack([preprocessing._tensor()(crop) for crop in crops])
    views_pixels = preprocessing.views_pixels()(read_bands(tmp_path / "image.png", color))
    assert views_pixels.dtype == torch.uint8 and views_pixels.shape[1] == (3 if color else 1)
    assert torch.equal(preprocessing.normalise(views_pixels), expected)
