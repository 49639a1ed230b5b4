"""Every kind of content key pinned to a literal: a change that alters a key (and so orphans every user's
cache or stored runs) fails here, and is made on purpose by bumping that kind's version in `keys.py`."""

from pathlib import Path

import pytest

from transfer.classifiers.heads import HeadSpec
from transfer.classifiers.scratch import ScratchConfig
from transfer.classifiers.settings import GridConfig
from transfer.classifiers.training import TrainConfig
from transfer.core.keys import VERSIONS, KeyKind, content_key
from transfer.data.datasets import ImageDataset, Sample
from transfer.descriptors.fisher import encoder_key
from transfer.descriptors.settings import BowConfig, FisherConfig
from transfer.features.backbones import Preprocessing
from transfer.features.cache import ExtractionKey
from transfer.runs.jobs import bow_key, fisher_key, head_key, scratch_key, svm_key

FEATURES = ExtractionKey(backbone="vgg16", weights="random:seed0", pooling="max", precision="fp32",
                         preprocessing=Preprocessing())
GRID = GridConfig(c_grid=(0.1, 1.0), cv=5, jobs=1, seed=0)


def _dataset(root: Path) -> ImageDataset:
    """Files of fixed bytes (not encoded images), so the digest does not depend on an image library."""
    splits = {"train": [Sample("a/1.jpg", 0), Sample("b/1.jpg", 1)], "test": [Sample("a/2.jpg", 0)]}
    for index, sample in enumerate(s for split in splits.values() for s in split):
        (root / sample.relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / sample.relpath).write_bytes(bytes([index]) * 100)
    return ImageDataset(root, ["a", "b"], splits, "train/test")


def test_every_key_kind_has_a_version():
    assert set(VERSIONS) == set(KeyKind)


def test_the_dataset_fingerprint_is_pinned(tmp_path):
    assert _dataset(tmp_path).fingerprint == "ad5ba02b9eb9ba76"


@pytest.mark.parametrize("make, literal", [
    (lambda: FEATURES.digest, "60a19690334529c7"),
    (lambda: svm_key("d" * 16, FEATURES.digest, "relu7", ("l2",), GRID), "c0a12cb4e755aacb"),
    (lambda: bow_key("d" * 16, BowConfig(), GRID), "d109d2b7f619422f"),  # the `bands` setting joined the config
    (lambda: fisher_key("d" * 16, FisherConfig(), GRID), "a072afdbf65bb653"),
    (lambda: encoder_key("d" * 16, FisherConfig()), "c7b38b1fb3d4e5b9"),
    (lambda: head_key("d" * 16, FEATURES.digest, "relu7", HeadSpec(name="fc3"), [TrainConfig()]), "c7abf73fb99de82a"),
    (lambda: scratch_key("d" * 16, ScratchConfig(), "fp32"), "0826236755159364"),
    (lambda: content_key(KeyKind.VOCABULARY, dataset="d" * 16, sift=BowConfig().sift, vocabulary=BowConfig().vocabulary), "08d454089f064619"),
    (lambda: content_key(KeyKind.WORDS, dataset="d" * 16, sift=BowConfig().sift, vocab="vocab-" + "e" * 16 + ".skops"), "9404e3dd71b5be1d"),
    (lambda: content_key(KeyKind.REPORT, runs=[1, 2], published=True), "905d757abf5e7d9e"),
])
def test_each_key_kind_is_pinned(make, literal):
    assert make() == literal


def test_field_order_does_not_matter_and_every_field_does():
    assert content_key(KeyKind.SVM, a=1, b=2) == content_key(KeyKind.SVM, b=2, a=1)
    assert content_key(KeyKind.SVM, a=1, b=2) != content_key(KeyKind.SVM, a=1, b=3)
    assert content_key(KeyKind.SVM, a=1) != content_key(KeyKind.HEAD, a=1)


def test_the_feature_key_does_not_depend_on_the_data_set_but_a_run_key_does():
    assert "dataset" not in FEATURES.as_dict()
    assert svm_key("a" * 16, FEATURES.digest, "relu7", ("l2",), GRID) != svm_key("b" * 16, FEATURES.digest, "relu7", ("l2",), GRID)


def test_a_key_refuses_what_it_cannot_encode_faithfully():
    with pytest.raises(TypeError, match="object"):
        content_key(KeyKind.SVM, thing=object())
