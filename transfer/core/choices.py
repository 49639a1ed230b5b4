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


class TableFormat(enum.StrEnum):
    """How `transfer results` writes the runs."""

    TABLE = "table"  # on the terminal
    CSV = "csv"
    JSONL = "jsonl"  # one JSON object per run and line
    PARQUET = "parquet"  # needs --out: a binary file


class Spatial(enum.StrEnum):
    """How a spatial output becomes a vector."""

    FLATTEN = "flatten"
    AVG = "avg"
    MAX = "max"


class Tokens(enum.StrEnum):
    """How a transformer's token output (tokens × width) becomes a vector."""

    CLS = "cls"  # the class token
    MEAN = "mean"  # the mean of the patch tokens
    CLS_MEAN = "cls+mean"  # both side by side (DINOv2's linear evaluation)


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
    RAY = "ray"  # actors of a Ray cluster (`features/ray_engine.py`)


class Runtime(enum.StrEnum):
    """What runs the forward pass (`features/runtime.py`)."""

    AUTO = "auto"  # measured on first use of a configuration, remembered in the cache folder
    EAGER = "eager"  # PyTorch as it comes
    COMPILED = "compiled"  # torch.compile with inductor's freezing


class View(enum.StrEnum):
    """Which views of an image the network sees; their features are averaged (test-time augmentation)."""

    CENTRE = "centre"  # the centre crop
    FLIP = "flip"  # the centre crop and its mirror image
    FIVE_CROPS = "5crops"  # the four corner crops and the centre crop
    TEN_CROPS = "10crops"  # the five crops and their mirror images

    @property
    def images(self) -> int:
        """Network inputs per image."""
        return {View.CENTRE: 1, View.FLIP: 2, View.FIVE_CROPS: 5, View.TEN_CROPS: 10}[self]


class Norm(enum.StrEnum):
    """How features are scaled before the linear SVM."""

    L2 = "l2"
    POWER = "power"  # signed square root of each value, then L2 (Perronnin et al. 2010)
    STANDARD = "standard"
    NONE = "none"


class Kernel(enum.StrEnum):
    """The SVM's kernel on BoW histograms."""

    CHI2 = "chi2"  # additive χ², through its approximate explicit map
    INTERSECTION = "intersection"  # histogram intersection (Lazebnik et al. 2006), exact


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
    FISHER = "fisher"
    HEAD = "head"
    SCRATCH = "scratch"
    FEWSHOT = "fewshot"
    REPORT = "report"


class StageStatus(enum.StrEnum):
    CACHED = "cached"  # its result was already there
    RAN = "ran"
    FAILED = "failed"
    BLOCKED = "blocked"  # a stage it needs failed
    INTERRUPTED = "interrupted"


class Probe(enum.StrEnum):
    """What classifies cached features (`transfer svm --probe`, a study's ``probes``)."""

    SVM = "svm"  # linear SVM (LinearSVC), C by CV
    LOGREG = "logreg"  # multinomial logistic regression, L2, C by CV
    KNN = "knn"  # cosine k-NN, votes weighted by exp(similarity / T), k and T by CV
    NCM = "ncm"  # nearest class mean of L2-normalised features: no setting

    @property
    def shown(self) -> str:
        return {Probe.SVM: "SVM", Probe.LOGREG: "logistic regression", Probe.KNN: "k-NN",
                Probe.NCM: "nearest class mean"}[self]


class Folds(enum.StrEnum):
    """How cross-validation splits the training rows."""

    KFOLD = "k-fold"  # stratified, `GridConfig.cv` folds
    LEAVE_ONE_OUT = "leave-one-out"  # one row held out at a time: few-shot subsets with fewer images per class than cv
    NONE = "none"  # no CV (one image per class): the grid's only setting, a fixed default


class Method(enum.StrEnum):
    """How a stored run classified (the results store's `method` column)."""

    SVM = "svm"  # linear SVM on network features
    PROBE = "probe"  # another probe on network features (`Probe`: logistic regression, k-NN, class means)
    BOW = "bow"  # local SIFT descriptors encoded per image: bag of words or Fisher vectors
    HEAD = "head"  # a new head, on cached features or trained end to end
    SCRATCH = "scratch"  # a small CNN trained from scratch
    FEWSHOT = "fewshot"  # a probe on a few training images per class (one shot count and seed per run)

    @property
    def cross_validated(self) -> bool:
        """Whether its training-side score is a k-fold CV mean over the whole training split (SVM, BoW),
        rather than the best epoch's accuracy on a hold-out part of it (heads, from scratch)."""
        return self in (Method.SVM, Method.PROBE, Method.BOW)


class ModelKind(enum.StrEnum):
    """What a model file holds (its payload's `kind`)."""

    SVM = "svm"
    PROBE = "probe"  # another probe on CNN features (`Probe`)
    BOW = "bow"
    FISHER = "fisher"  # Fisher vectors on SIFT (a `bow`-method run)
    HEAD = "head"  # a head for cached features
    NETWORK = "network"  # a whole fine-tuned network


MODEL_COMMANDS = "`transfer svm` (any `--probe`), `bow`, `fisher`, `finetune` or a study's stages (`transfer run`)"  # what writes them
