"""Study files (TOML): read, check everything before anything runs, report every problem with its line.

A study names the data, the feature extractions, the classifiers and the report; `plan.py`
turns it into stages. Each section is a dataclass whose fields are the keys a user may write.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from transfer.classifiers.heads import DEFAULT_HEAD, HeadSpec
from transfer.classifiers.scratch import SCRATCH_TRAIN, ScratchConfig
from transfer.classifiers.settings import DEFAULT_NORMS, DEFAULT_PROBES, FewShotConfig, GridConfig, KnnGrid
from transfer.classifiers.training import TrainConfig
from transfer.core.choices import (
    Device,
    Engine,
    Kernel,
    Optimizer,
    Pooling,
    Precision,
    Runtime,
    Schedule,
    Spatial,
    Tokens,
    View,
)
from transfer.core.config import choice
from transfer.core.errors import UserError
from transfer.core.files import confined, safe_name
from transfer.core.paths import REPORTS_DIR
from transfer.data.datasets import DEFAULT_TRAIN_PER_CLASS, SplitPolicy
from transfer.descriptors.settings import HISTOGRAM_C_GRID, BowConfig, FisherConfig, SiftConfig, VocabularyConfig
from transfer.features.registry import get_backbone
from transfer.features.spec import FeatureSpec, RunOptions


def _listed(values: typing.Iterable) -> typing.Callable[[], list]:
    """A list field's default: a configuration's own default values, as a fresh list."""
    return lambda: list(values)


# Each default below is the configuration's own (`FeatureSpec`, `GridConfig`, ...); a section only encodes
# "none" its own way (0 or "") where TOML has no null.


@dataclass
class StudySection:
    name: str = ""  # default: the file name without .toml
    seed: int = 0  # CV folds, k-means sampling, head initialisation
    jobs: int = GridConfig.jobs  # parallel SVM fits (-1: all cores)


@dataclass
class DataSection:
    name: str = ""  # a dataset `transfer data fetch` knows (15scene): `paths.default_data_dir(name)`
    path: str = ""  # or a folder of your own, relative to the working directory
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS  # DIR/<class>/* layouts only
    split_seed: int = SplitPolicy.seed
    test_per_class: int = 0  # > 0: at most this many test images per class (drawn with split_seed)
    per_class: int = 0  # > 0: keep this many images per class in each split (quick runs)


@dataclass
class FeaturesSection:
    name: str = ""  # how a [[combine]] entry names this one
    backbone: str = FeatureSpec.backbone
    weights: str = FeatureSpec.weights  # imagenet, random, or a state_dict file
    layers: list[str] = field(default_factory=list)  # empty: the backbone's default layer
    poolings: list[str] = field(default_factory=_listed([str(FeatureSpec.pooling)]))
    spatial: str = str(FeatureSpec.spatial)
    tokens: str = ""  # a transformer's token layers: cls, mean or cls+mean ("": FeatureSpec's default)
    precision: str = str(FeatureSpec.precision)
    color: bool = FeatureSpec.color
    image_size: int = 0  # 0: the backbone's own crop
    views: str = str(FeatureSpec.views)  # test-time augmentation: centre, flip, 5crops, 10crops (features averaged)
    combine: bool = False  # with [svm]: also one SVM on all the layers side by side (each L2-normalised)
    batch_size: int = RunOptions.batch_size
    device: str = str(RunOptions.device)
    engine: str = str(RunOptions.engine)  # or "ray": Ray Data actors (`transfer extract --engine ray`)
    runtime: str = str(RunOptions.runtime)  # auto, eager or compiled (`transfer extract --runtime`)
    address: str = ""  # with engine = "ray": the cluster to join ("" : $RAY_ADDRESS, else a local one)
    actors: int = 0  # with engine = "ray": 0 = one per CPU
    gpus_per_actor: float = RunOptions.gpus_per_actor


@dataclass
class SvmSection:
    c_grid: list[float] = field(default_factory=_listed(GridConfig.c_grid))
    norm: str = ",".join(DEFAULT_NORMS)  # or a comma list ("l2,power,standard"): CV chooses among them, like C
    cv: int = GridConfig.cv
    splits: int = GridConfig.splits
    probes: list[str] = field(default_factory=_listed(DEFAULT_PROBES))  # svm, logreg, knn, ncm: a result each
    k_grid: list[int] = field(default_factory=_listed(KnnGrid.k_grid))  # k-NN's settings, chosen by CV
    temperatures: list[float] = field(default_factory=_listed(KnnGrid.temperatures))


@dataclass
class FewShotSection:
    """Few-shot curves of every [[features]] entry's layers: each probe on `shots` images per class, `seeds`
    subsets each, settings chosen by CV inside each subset."""

    shots: list[int] = field(default_factory=_listed(FewShotConfig.shots))
    seeds: int = FewShotConfig.seeds
    probes: list[str] = field(default_factory=_listed(DEFAULT_PROBES))
    c_grid: list[float] = field(default_factory=_listed(GridConfig.c_grid))
    k_grid: list[int] = field(default_factory=_listed(KnnGrid.k_grid))
    temperatures: list[float] = field(default_factory=_listed(KnnGrid.temperatures))
    cv: int = GridConfig.cv


@dataclass
class CombineSection:
    features: list[str] = field(default_factory=list)  # names of [[features]] entries: one SVM on them side by side


@dataclass
class BowSection:
    pyramids: list[int] = field(default_factory=_listed([BowConfig.pyramid]))
    kernels: list[str] = field(default_factory=_listed([str(BowConfig.kernel)]))  # each pyramid with each kernel
    step: int = SiftConfig.step
    sizes: list[float] = field(default_factory=_listed(SiftConfig.sizes))
    contrast: float = SiftConfig.contrast
    words: int = VocabularyConfig.words
    sample: int = VocabularyConfig.sample
    bands: bool = BowConfig.bands  # pyramids of 1 level or more also get 3 horizontal bands
    sqrt: bool = BowConfig.sqrt
    c_grid: list[float] = field(default_factory=_listed(HISTOGRAM_C_GRID))
    cv: int = GridConfig.cv


@dataclass
class FisherSection:
    step: int = FisherConfig.sift.step  # SIFT settings
    sizes: list[float] = field(default_factory=_listed(FisherConfig.sift.sizes))
    contrast: float = FisherConfig.sift.contrast
    components: int = FisherConfig.components
    pca: int = FisherConfig.pca
    sample: int = FisherConfig.sample
    pyramid: bool = FisherConfig.pyramid  # regions 1×1 + 2×2 + 3×1
    c_grid: list[float] = field(default_factory=_listed(HISTOGRAM_C_GRID))
    cv: int = GridConfig.cv


@dataclass
class HeadsSection:
    names: list[str] = field(default_factory=_listed([DEFAULT_HEAD]))
    pooling: str = str(FeatureSpec.pooling)  # which VGG16 pooling variant the heads sit on
    optimizers: list[str] = field(default_factory=_listed([str(TrainConfig.optimizer)]))
    lrs: list[float] = field(default_factory=_listed([TrainConfig.lr]))
    momentum: float = TrainConfig.momentum
    weight_decay: float = TrainConfig.weight_decay
    schedule: str = str(TrainConfig.schedule)
    batch_size: int = TrainConfig.batch_size
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    dropout: float = HeadSpec.dropout
    val_fraction: float = TrainConfig.val_fraction


@dataclass
class ScratchSection:
    archs: list[str] = field(default_factory=_listed([ScratchConfig.arch]))
    size: int = ScratchConfig.size
    ladder: bool = True  # the whole improvement ladder; false: one plain run per architecture
    lr: float = SCRATCH_TRAIN.lr
    batch_size: int = SCRATCH_TRAIN.batch_size
    epochs: int = SCRATCH_TRAIN.epochs
    patience: int = SCRATCH_TRAIN.patience


@dataclass
class ReportSection:
    name: str = ""  # folder under reports/; default: the study's name
    published: bool = True


@dataclass
class Study:
    path: Path
    study: StudySection
    data: DataSection
    features: list[FeaturesSection]
    combine: list[CombineSection]
    svm: SvmSection | None
    fewshot: FewShotSection | None
    bow: BowSection | None
    fisher: FisherSection | None
    heads: HeadsSection | None
    scratch: ScratchSection | None
    report: ReportSection | None


# section name -> (dataclass, is an array of tables [[name]])
SECTIONS: dict[str, tuple[type, bool]] = {
    "study": (StudySection, False),
    "data": (DataSection, False),
    "features": (FeaturesSection, True),
    "combine": (CombineSection, True),
    "svm": (SvmSection, False),
    "fewshot": (FewShotSection, False),
    "bow": (BowSection, False),
    "fisher": (FisherSection, False),
    "heads": (HeadsSection, False),
    "scratch": (ScratchSection, False),
    "report": (ReportSection, False),
}

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def key_lines(text: str) -> dict[tuple, int]:
    """Line of every table header and key: ("features", 1, "layers") -> 17.

    tomllib gives values but no positions, and the position-keeping TOML libraries expose them
    only through private APIs; study files are flat tables, so a line scan is enough.
    """
    lines: dict[tuple, int] = {}
    counts: dict[str, int] = {}
    table: tuple = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2)
            if header.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = (name, counts[name])
            else:
                table = (name, None)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, key.group(1)), number)
    return lines


class _Problems:
    """Collects every problem of a file, so that they are all reported at once."""

    def __init__(self, path: Path, lines: dict[tuple, int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[tuple[int, str]] = []

    def add(self, where: tuple, message: str) -> None:
        line = self.lines.get(where) or self.lines.get(where[:2]) or 0
        if (line, message) not in self.items:
            self.items.append((line, message))

    def raise_if_any(self) -> None:
        if self.items:
            listed = "\n".join(f"  {self.path}:{line}: {message}" if line else f"  {self.path}: {message}"
                               for line, message in sorted(self.items))
            raise UserError(f"{len(self.items)} problem(s) in the study file, nothing was run:\n{listed}")


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list[str]: "a list of strings", list[float]: "a list of numbers", list[int]: "a list of integers"}


def _section(cls: type, table: dict, where: tuple, problems: _Problems):
    """The dataclass filled from a TOML table; unknown keys and wrong types go to ``problems``."""
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in table.items():
        if key not in hints:
            problems.add((*where, key), f"unknown key {key!r} in [{where[0]}]{_suggest(key, hints)}; "
                                        f"allowed: {', '.join(hints)}")
        elif not _type_ok(value, hints[key]):
            problems.add((*where, key), f"{where[0]}.{key} must be {_TYPE_NAMES.get(hints[key], hints[key])}, got {value!r}")
        else:
            values[key] = [float(v) for v in value] if hints[key] == list[float] else value
    return cls(**values)


# ----------------------------------------------------------- sections → configurations
# The pipeline builds its configurations with these functions and the checker builds the very same ones:
# each rule is checked once, where its configuration is constructed (a `ConfigError` naming the field),
# and the checker reports it at the line of the key that field comes from.

def split_policy(data: DataSection):
    return SplitPolicy(train_per_class=data.train_per_class, seed=data.split_seed,
                       test_per_class=data.test_per_class or None)


def feature_spec(entry: FeaturesSection, pooling: str, layers=None, weights: str | None = None, plain: bool = False):
    """The entry's features at ``pooling``, of ``layers`` (None: its own); ``plain``: without the entry's
    reductions of maps and tokens (the layers heads read are vectors already)."""
    tokens = choice(Tokens, entry.tokens, "tokens") if entry.tokens and not plain else FeatureSpec.tokens
    return FeatureSpec(backbone=entry.backbone, weights=weights or entry.weights,
                       layers=tuple(entry.layers if layers is None else layers),
                       spatial=FeatureSpec.spatial if plain else choice(Spatial, entry.spatial, "spatial"),
                       pooling=choice(Pooling, pooling, "pooling"), precision=choice(Precision, entry.precision, "precision"),
                       color=entry.color, image_size=entry.image_size or None, views=choice(View, entry.views, "views"),
                       tokens=tokens)


def combined_parts(study: Study, section: CombineSection, weights: str | None = None) -> list:
    """The extractions a [[combine]] entry puts side by side: its named [[features]] entries, each with
    its layers at its one pooling."""
    from transfer.core.config import ConfigError
    from transfer.features.spec import check_parts

    named = {entry.name: entry for entry in study.features if entry.name}
    unknown = [name for name in section.features if name not in named]
    if unknown:
        known = ", ".join(named) or 'none: give each entry to combine a name, e.g. name = "lite0"'
        raise ConfigError("features", f"no [[features]] entry is named {', '.join(map(repr, unknown))}; named entries: {known}")
    entries = [named[name] for name in dict.fromkeys(section.features)]
    several = [entry.name for entry in entries if len(set(entry.poolings)) != 1]
    if several:
        raise ConfigError("features", f"entry {several[0]!r} has several poolings; a combined part takes one: "
                                      f"give it poolings = [\"max\"] (or another single one)")
    parts = [feature_spec(entry, entry.poolings[0], weights=weights) for entry in entries]
    check_parts(parts)
    return parts


def run_options(entry: FeaturesSection):
    """How a [[features]] entry is extracted."""
    return RunOptions(device=choice(Device, entry.device, "device"), batch_size=entry.batch_size,
                      engine=choice(Engine, entry.engine, "engine"), runtime=choice(Runtime, entry.runtime, "runtime"),
                      address=entry.address or None, actors=entry.actors or None, gpus_per_actor=entry.gpus_per_actor)


def grid_config(study: Study, section: SvmSection | FewShotSection | BowSection | FisherSection):
    splits = section.splits if isinstance(section, SvmSection) else 1
    return GridConfig(c_grid=tuple(section.c_grid), cv=section.cv, jobs=study.study.jobs, seed=study.study.seed,
                      splits=splits)


def svm_norm(section: SvmSection):
    """The normalisations the CV chooses among (one: no choice)."""
    from transfer.classifiers.settings import parse_norms

    return parse_norms(section.norm)


def probe_settings(section: SvmSection | FewShotSection):
    """The probes a section asks for, and k-NN's grid."""
    from transfer.classifiers.settings import parse_probes

    return parse_probes(",".join(section.probes)), KnnGrid(k_grid=tuple(section.k_grid), temperatures=tuple(section.temperatures))


def fewshot_config(section: FewShotSection):
    return FewShotConfig(shots=tuple(section.shots), seeds=section.seeds)


def bow_config(study: Study, pyramid: int, kernel: str):
    bow = study.bow
    assert bow is not None
    return BowConfig(sift=SiftConfig(step=bow.step, sizes=tuple(bow.sizes), contrast=bow.contrast),
                     vocabulary=VocabularyConfig(words=bow.words, sample=bow.sample, seed=study.study.seed),
                     pyramid=pyramid, bands=bow.bands and pyramid > 0, sqrt=bow.sqrt,
                     kernel=choice(Kernel, kernel, "kernel"))


def fisher_config(study: Study):
    section = study.fisher
    assert section is not None
    return FisherConfig(sift=SiftConfig(step=section.step, sizes=tuple(section.sizes), contrast=section.contrast), components=section.components,
                        pca=section.pca, sample=section.sample, pyramid=section.pyramid, seed=study.study.seed)


def head_spec(study: Study, name: str, n_classes: int | None):
    assert study.heads is not None
    return HeadSpec.parse(name, n_classes, study.heads.dropout)


def train_configs(study: Study):
    """One training setting per optimizer × learning rate; the best on validation is kept."""

    heads = study.heads
    assert heads is not None
    return [TrainConfig(optimizer=choice(Optimizer, optimizer, "optimizer"), lr=lr, momentum=heads.momentum,
                        weight_decay=heads.weight_decay, schedule=choice(Schedule, heads.schedule, "schedule"), batch_size=heads.batch_size, epochs=heads.epochs,
                        patience=heads.patience, val_fraction=heads.val_fraction, seed=study.study.seed)
            for optimizer in heads.optimizers for lr in heads.lrs]


def scratch_config(study: Study, arch: str):
    section = study.scratch
    assert section is not None
    defaults = ScratchConfig()
    train = replace(defaults.train, lr=section.lr, batch_size=section.batch_size, epochs=section.epochs,
                    patience=section.patience, seed=study.study.seed)
    return replace(defaults, arch=arch, size=section.size, train=train)


# A configuration field → the study key it comes from, where the names differ.
_KEYS_OF_FIELDS: dict[str, dict[str, tuple]] = {
    "features": {"pooling": ("poolings",)},
    "svm": {"jobs": ("study", None, "jobs"), "seed": ("study", None, "seed"), "probe": ("probes",)},
    "fewshot": {"jobs": ("study", None, "jobs"), "seed": ("study", None, "seed"), "probe": ("probes",)},
    "bow": {"pyramid": ("pyramids",), "kernel": ("kernels",), "jobs": ("study", None, "jobs"), "seed": ("study", None, "seed")},
    "fisher": {"jobs": ("study", None, "jobs"), "seed": ("study", None, "seed")},
    "heads": {"optimizer": ("optimizers",), "lr": ("lrs",), "head": ("names",)},
    "scratch": {"arch": ("archs",)},
}


def _built(problems: _Problems, where: tuple, build: typing.Callable, *args: typing.Any) -> None:
    """Build a configuration as the pipeline will, ``build(*args)``; its `ConfigError` is reported at its key's line."""
    from transfer.core.config import ConfigError

    try:
        build(*args)
    except ConfigError as error:
        key = _KEYS_OF_FIELDS.get(where[0], {}).get(error.field, (error.field,))
        problems.add(key if len(key) == 3 else (*where, *key), str(error))
    except UserError as error:
        problems.add(where, str(error))


def report_directory(reports_dir: Path, study: Study) -> Path:
    """Where the study's report goes: ``reports_dir/<name>``. A name given in [report] must be a plain
    folder name; the default, the study's name, is made one."""
    name = study.report.name if study.report is not None and study.report.name else safe_name(study.study.name)
    return confined(reports_dir, name, "report name")


def _check(study: Study, problems: _Problems) -> None:
    from transfer.data.fetch import PUBLIC_DATASETS

    try:
        report_directory(REPORTS_DIR, study)
    except UserError as error:
        problems.add(("report", None, "name"), str(error))
    data = study.data
    if bool(data.name) == bool(data.path):
        problems.add(("data", None), "[data] needs exactly one of name (e.g. \"15scene\") or path (a folder)")
    elif data.name and data.name not in PUBLIC_DATASETS:
        problems.add(("data", None, "name"), f"unknown dataset name {data.name!r}; known: {', '.join(PUBLIC_DATASETS)} "
                                              f"(for a folder of your own use path = \"DIR\")")
    elif data.path and not Path(data.path).is_dir():
        problems.add(("data", None, "path"), f"data folder {data.path!r} does not exist (relative to {Path.cwd()})")
    _built(problems, ("data", None), split_policy, data)
    if data.per_class < 0:
        problems.add(("data", None, "per_class"), "per_class must be 0 (all images) or positive")
    if not study.features and study.heads is not None:
        problems.add(("heads", None), "[heads] needs a [[features]] entry to sit on")
    for name in ("svm", "fewshot"):
        if getattr(study, name) is not None and not study.features:
            problems.add((name, None), f"[{name}] needs at least one [[features]] entry")
    for index, entry in enumerate(study.features):
        where = ("features", index)
        if not entry.poolings:
            problems.add((*where, "poolings"), "poolings is empty: e.g. [\"max\"]")
        for pooling in dict.fromkeys(entry.poolings):
            _built(problems, where, feature_spec, entry, pooling)
        _built(problems, where, run_options, entry)
        if entry.combine:
            from transfer.features.spec import check_combination

            _built(problems, where, check_combination, tuple(entry.layers))
        if entry.weights not in ("imagenet", "random"):
            from transfer.features.backbones import Weights

            _built(problems, where, Weights.parse, entry.weights)
    named: set[str] = set()
    for index, entry in enumerate(study.features):
        if entry.name and entry.name in named:
            problems.add(("features", index, "name"), f"two [[features]] entries are named {entry.name!r}: names must differ")
        named.add(entry.name)
    for index, section in enumerate(study.combine):
        if study.svm is None:
            problems.add(("combine", index), "[[combine]] fits an SVM with the [svm] settings: add an [svm] section")
        _built(problems, ("combine", index), combined_parts, study, section)
    if study.svm is not None:
        _built(problems, ("svm", None), grid_config, study, study.svm)
        _built(problems, ("svm", None), svm_norm, study.svm)
        _built(problems, ("svm", None), probe_settings, study.svm)
    if study.fewshot is not None:
        _built(problems, ("fewshot", None), grid_config, study, study.fewshot)
        _built(problems, ("fewshot", None), probe_settings, study.fewshot)
        _built(problems, ("fewshot", None), fewshot_config, study.fewshot)
    if study.bow is not None:
        _built(problems, ("bow", None), grid_config, study, study.bow)
        for name, example in (("pyramids", "[0, 2]"), ("kernels", '["chi2", "intersection"]')):
            if not getattr(study.bow, name):
                problems.add(("bow", None, name), f"{name} is empty: e.g. {example}")
        for pyramid in dict.fromkeys(study.bow.pyramids):
            for kernel in dict.fromkeys(study.bow.kernels):
                _built(problems, ("bow", None), bow_config, study, pyramid, kernel)
    if study.fisher is not None:
        _built(problems, ("fisher", None), grid_config, study, study.fisher)
        _built(problems, ("fisher", None), fisher_config, study)
    if study.heads is not None:
        heads = study.heads
        if not heads.names:
            problems.add(("heads", None, "names"), "names is empty: e.g. [\"fc\", \"mlp:1024,1024\"]")
        if not heads.optimizers or not heads.lrs:
            problems.add(("heads", None), "heads: optimizers and lrs must each name at least one")
        for name in heads.names:  # fcN is checked against the data's classes when the stage runs
            _built(problems, ("heads", None), head_spec, study, name, None)
        _built(problems, ("heads", None), train_configs, study)
        if study.features and heads.pooling not in {p for f in study.features for p in f.poolings}:
            problems.add(("heads", None, "pooling"), f"heads.pooling {heads.pooling!r} is not among the features' poolings")
    if study.scratch is not None:
        if not study.scratch.archs:
            problems.add(("scratch", None, "archs"), "archs is empty: e.g. [\"base\"]")
        for arch in study.scratch.archs:
            _built(problems, ("scratch", None), scratch_config, study, arch)


def load_study(path: Path) -> Study:
    """Parse and check a study file; every problem found is reported together, with its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file {path} does not exist; the shipped ones are in pipelines/")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    problems = _Problems(path, key_lines(text))
    for name, value in raw.items():
        if name not in SECTIONS:
            problems.add((name, None), f"unknown section [{name}]{_suggest(name, SECTIONS)}; allowed: {', '.join(SECTIONS)}")
        elif SECTIONS[name][1] != isinstance(value, list):
            problems.add((name, None), f"{name} must be written " + (f"[[{name}]]" if SECTIONS[name][1] else f"[{name}]"))
    sections: dict[str, typing.Any] = {}
    for name, (cls, repeated) in SECTIONS.items():
        value = raw.get(name)
        if repeated:
            tables = value if isinstance(value, list) else []
            sections[name] = [_section(cls, t, (name, i), problems) for i, t in enumerate(tables)]
        else:
            sections[name] = _section(cls, value, (name, None), problems) if isinstance(value, dict) else None
    if sections["data"] is None:
        problems.add(("data", None), "missing [data] section: name = \"15scene\" or path = \"DIR\"")
        sections["data"] = DataSection(name="15scene")
    study = Study(path=path, study=sections["study"] or StudySection(), **{k: v for k, v in sections.items() if k != "study"})
    if not study.study.name:
        study.study.name = path.stem
    for entry in study.features:
        if not entry.layers:
            try:
                entry.layers = [get_backbone(entry.backbone).taps.default]
            except UserError:  # an unknown backbone: reported by the check below
                pass
    _check(study, problems)
    problems.raise_if_any()
    return study

