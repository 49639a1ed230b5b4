"""`transfer inspect` and the receptive fields of `transfer layers`: random weights, generated images."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from transfer.cli.inspect import inspect_images, map_order, maps_figure
from transfer.core.errors import UserError
from transfer.features.backbones import Preprocessing, describe_layers
from transfer.features.registry import get_backbone


def test_vgg16_receptive_fields_match_hand_computation():
    infos, _ = describe_layers(get_backbone("vgg16"), 32)
    geometry = {info.name: (info.receptive_field, info.stride) for info in infos}
    # 3×3 convolutions add 2 × stride so far; 2×2 pools add 1 × stride and double it.
    assert geometry["conv1_1"] == (3, 1)
    assert geometry["relu1_1"] == (3, 1)
    assert geometry["conv1_2"] == (5, 1)
    assert geometry["pool1"] == (6, 2)
    assert geometry["conv2_1"] == (10, 2)
    assert geometry["conv2_2"] == (14, 2)
    assert geometry["pool2"] == (16, 4)
    assert geometry["conv3_1"] == (24, 4)
    assert geometry["pool5"] == (212, 32)
    assert geometry["fc6"] == (None, None)


def test_lite0_stem_is_one_stride_two_convolution():
    infos, _ = describe_layers(get_backbone("efficientnet_lite0"), 64)
    geometry = {info.name: (info.receptive_field, info.stride) for info in infos}
    assert geometry["stem"] == (3, 2)
    assert geometry["conv_head"][1] == 32
    assert geometry["avgpool"] == (None, None)


def _images(tmp_path):
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), "L").save(gray)
    colour = tmp_path / "colour.jpg"
    Image.fromarray(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8), "RGB").save(colour)
    return gray, colour


@pytest.mark.parametrize("backbone, maps, count", [("vgg16", "conv1_1", 64), ("efficientnet_lite0", "stem", 32)])
def test_inspect_gives_top_classes_and_one_figure_per_image(tmp_path, backbone, maps, count):
    gray, colour = _images(tmp_path)
    for color in (False, True):
        found = inspect_images([gray, colour], backbone, "random", top=4, out=tmp_path / "out", color=color)
        assert [len(f.classes) for f in found] == [4, 4]
        assert all(f.scores == sorted(f.scores, reverse=True) for f in found)
        assert all(0 < sum(f.scores) <= 1 for f in found)
        assert [f.maps_png.name for f in found] == [f"00-gray-{backbone}-{maps}.png", f"01-colour-{backbone}-{maps}.png"]
        assert all(f.maps_png.stat().st_size > 0 for f in found)


def test_the_maps_figure_has_every_channel_with_its_index_and_the_input_view():
    maps = np.random.default_rng(0).random((64, 12, 12)).astype(np.float32)
    figure = maps_figure(torch.zeros(3, 32, 32), Preprocessing(), maps, "x")
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[0].startswith("input as the network saw it")
    assert titles[1:65] == [f"#{i}" for i in range(64)]
    assert len(figure.axes) == 66  # input view, 64 maps, colour bar
    images = [axis.get_images()[0] for axis in figure.axes[1:65]]
    assert {image.get_clim() for image in images} == {(float(maps.min()), float(maps.max()))}  # one colour scale
    view = figure.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(view), np.tile(np.array(Preprocessing().mean), (32, 32, 1)), atol=1e-6)


def test_maps_can_be_ordered_by_activation():
    maps = np.stack([np.full((2, 2), value) for value in (0.1, 3.0, 1.0)])
    assert map_order(maps, "index") == [0, 1, 2]
    assert map_order(maps, "activation") == [1, 2, 0]


def test_inspect_errors_are_messages(tmp_path):
    gray, _ = _images(tmp_path)
    with pytest.raises(UserError, match="a vector, not maps"):
        inspect_images([gray], "vgg16", "random", maps="fc7", out=None)
    (tmp_path / "broken.jpg").write_bytes(b"no")
    found = inspect_images([gray, tmp_path / "broken.jpg"], "efficientnet_lite0", "random", out=None)
    assert found[1].error.startswith("cannot be decoded")
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "inspect", str(gray), "--backbone", "efficientnet_lite0",
                             "--weights", "random", "--top", "2", "--no-maps", "--format", "json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)[0]["classes"]) == 2
