"""The closed vocabularies of settings, each an enum: the CLI shows their choices, configurations convert
and check values with them (`config.choice`). Kept free of heavy imports so that `--help` stays fast."""

from __future__ import annotations

import enum


class Pooling(enum.StrEnum):
    """VGG16's max-poolings, or what replaces them."""

    MAX = "max"
    AVG = "avg"
    SUM = "sum"  # LP pooling, p=1
    L2 = "l2"  # LP pooling, p=2


class Spatial(enum.StrEnum):
    """How a spatial output becomes a vector."""

    FLATTEN = "flatten"
    AVG = "avg"
    MAX = "max"


class WeightsSource(enum.StrEnum):
    IMAGENET = "imagenet"  # the backbone's published weights
    RANDOM = "random"  # tests
    FILE = "file"  # a state_dict file


class Precision(enum.StrEnum):
    AUTO = "auto"  # bf16 where the hardware computes it natively, else fp32
    FP32 = "fp32"
    BF16 = "bf16"


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Engine(enum.StrEnum):
    LOCAL = "local"  # this process
    RAY = "ray"  # actors of a Ray cluster (`distributed.py`)


class Norm(enum.StrEnum):
    """How features are scaled before the linear SVM."""

    L2 = "l2"
    STANDARD = "standard"
    NONE = "none"


class Optimizer(enum.StrEnum):
    SGD = "sgd"
    ADAM = "adam"


class Schedule(enum.StrEnum):
    COSINE = "cosine"
    EXP = "exp"  # lr × lr_decay after every epoch
    NONE = "none"


class Augmentation(enum.StrEnum):
    CROP = "crop"  # random (size·7/8)² crops in training, centre crop in evaluation
    FLIP = "flip"  # horizontal flips in training


class StageKind(enum.StrEnum):
    """What a stage of a study does (`transfer run --only` takes these)."""

    EXTRACT = "extract"
    SVM = "svm"
    BOW = "bow"
    HEAD = "head"
    SCRATCH = "scratch"
    REPORT = "report"


class StageStatus(enum.StrEnum):
    CACHED = "cached"  # its result was already there
    RAN = "ran"
    FAILED = "failed"
    BLOCKED = "blocked"  # a stage it needs failed
    INTERRUPTED = "interrupted"


class Method(enum.StrEnum):
    """How a stored run classified (the results store's `method` column)."""

    SVM = "svm"  # linear SVM on network features
    BOW = "bow"  # bag of words + SIFT
    HEAD = "head"  # a new head, on cached features or trained end to end
    SCRATCH = "scratch"  # a small CNN trained from scratch


class ModelKind(enum.StrEnum):
    """What a model file holds (its payload's `kind`)."""

    SVM = "svm"
    BOW = "bow"
    HEAD = "head"  # a head for cached features
    NETWORK = "network"  # a whole fine-tuned network
