"""Study files (TOML): read, check everything before anything runs, report every problem with its line.

A study names the data, the feature extractions, the classifiers and the report; `pipeline.py`
turns it into stages. Each section is a dataclass whose fields are the keys a user may write.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .files import confined, safe_name


@dataclass
class StudySection:
    name: str = ""  # default: the file name without .toml
    seed: int = 0  # CV folds, k-means sampling, head initialisation
    jobs: int = -1  # parallel SVM fits (-1: all cores)


@dataclass
class DataSection:
    name: str = ""  # a dataset `transfer data fetch` knows (15scene): $TRANSFER_DATA or data/<name>
    path: str = ""  # or a folder of your own, relative to the working directory
    train_per_class: int = 100  # DIR/<class>/* layouts only
    split_seed: int = 0
    per_class: int = 0  # > 0: keep this many images per class in each split (quick runs)


@dataclass
class FeaturesSection:
    backbone: str = "vgg16"
    weights: str = "imagenet"  # imagenet, random, or a state_dict file
    layers: list[str] = field(default_factory=lambda: ["relu7"])
    poolings: list[str] = field(default_factory=lambda: ["max"])
    spatial: str = "flatten"
    precision: str = "auto"
    color: bool = False
    image_size: int = 0  # 0: the backbone's own crop
    batch_size: int = 32
    device: str = "auto"
    engine: str = "local"  # or "ray": Ray Data actors (`transfer extract --engine ray`)
    address: str = ""  # with engine = "ray": the cluster to join ("" : $RAY_ADDRESS, else a local one)
    actors: int = 0  # with engine = "ray": 0 = one per CPU
    gpus_per_actor: float = 0.0


@dataclass
class SvmSection:
    c_grid: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    norm: str = "l2"
    cv: int = 5
    splits: int = 1


@dataclass
class BowSection:
    pyramids: list[int] = field(default_factory=lambda: [0])
    step: int = 4
    sizes: list[float] = field(default_factory=lambda: [2.7, 4.5])
    words: int = 1000
    sample: int = 100_000
    sqrt: bool = False
    c_grid: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0, 10.0])
    cv: int = 5


@dataclass
class HeadsSection:
    names: list[str] = field(default_factory=lambda: ["fc"])
    pooling: str = "max"  # which VGG16 pooling variant the heads sit on
    optimizers: list[str] = field(default_factory=lambda: ["sgd"])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    batch_size: int = 64
    epochs: int = 30
    patience: int = 8
    dropout: float = 0.5
    val_fraction: float = 0.2


@dataclass
class ScratchSection:
    archs: list[str] = field(default_factory=lambda: ["base"])
    size: int = 32
    ladder: bool = True  # the whole improvement ladder; false: one plain run per architecture
    lr: float = 0.05
    batch_size: int = 32
    epochs: int = 60
    patience: int = 15


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
    svm: SvmSection | None
    bow: BowSection | None
    heads: HeadsSection | None
    scratch: ScratchSection | None
    report: ReportSection | None


# section name -> (dataclass, is an array of tables [[name]])
SECTIONS: dict[str, tuple[type, bool]] = {
    "study": (StudySection, False),
    "data": (DataSection, False),
    "features": (FeaturesSection, True),
    "svm": (SvmSection, False),
    "bow": (BowSection, False),
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


def _check_features(entry: FeaturesSection, where: tuple, problems: _Problems) -> None:
    from .backbones import BACKBONES, POOLING_VARIANTS, SPATIAL_REDUCTIONS
    from .extraction import DEVICES, PRECISIONS

    def check(key: str, ok: bool, message: str) -> None:
        if not ok:
            problems.add((*where, key), message)

    spec = BACKBONES.get(entry.backbone)
    check("backbone", spec is not None, f"unknown backbone {entry.backbone!r}{_suggest(entry.backbone, BACKBONES)}; "
                                        f"choose one of: {', '.join(BACKBONES)}")
    if spec is not None:
        unknown = [layer for layer in entry.layers if layer not in spec.layers]
        check("layers", not unknown, f"unknown layer(s) {', '.join(map(repr, unknown))} for {spec.name}"
                                     f"{_suggest(unknown[0], spec.layers) if unknown else ''}; `transfer layers "
                                     f"--backbone {spec.name}` lists them")
        variants = [p for p in entry.poolings if p != "max"]
        check("poolings", spec.has_pooling_variants or not variants,
              f"{spec.name} has no max-pooling layers to replace: poolings must be [\"max\"], got {entry.poolings}")
    check("layers", bool(entry.layers), "layers is empty: name at least one, e.g. [\"relu7\"]")
    bad = [p for p in entry.poolings if p not in POOLING_VARIANTS]
    check("poolings", not bad and bool(entry.poolings), f"poolings must be a non-empty list of {', '.join(POOLING_VARIANTS)}; "
                                                        f"got {entry.poolings}")
    check("spatial", entry.spatial in SPATIAL_REDUCTIONS, f"spatial must be one of {', '.join(SPATIAL_REDUCTIONS)}, got {entry.spatial!r}")
    check("precision", entry.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {entry.precision!r}")
    check("device", entry.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {entry.device!r}")
    check("batch_size", entry.batch_size >= 1, f"batch_size must be at least 1, got {entry.batch_size}")
    check("image_size", entry.image_size == 0 or entry.image_size >= 32, "image_size must be 0 (the backbone's) or at least 32")
    try:
        run_options(entry)
    except UserError as error:
        problems.add((*where, "engine"), str(error))
    if entry.weights not in ("imagenet", "random") and not Path(entry.weights).is_file():
        problems.add((*where, "weights"), f"weights {entry.weights!r}: expected imagenet, random or an existing state_dict file")


def run_options(entry: FeaturesSection):
    """How a [[features]] entry is extracted (`extraction.RunOptions`, which checks it)."""
    from .extraction import RunOptions

    return RunOptions(device=entry.device, batch_size=entry.batch_size, engine=entry.engine,
                      address=entry.address or None, actors=entry.actors or None, gpus_per_actor=entry.gpus_per_actor)


def _check_grid(section: str, values: list[float], problems: _Problems) -> None:
    from .classifiers import check_c_grid

    try:
        check_c_grid(values, f"{section}.c_grid")
    except UserError as error:
        problems.add((section, None, "c_grid"), str(error))


def report_directory(reports_dir: Path, study: Study) -> Path:
    """Where the study's report goes: ``reports_dir/<name>``. A name given in [report] must be a plain
    folder name; the default, the study's name, is made one."""
    name = study.report.name if study.report is not None and study.report.name else safe_name(study.study.name)
    return confined(reports_dir, name, "report name")


def _check(study: Study, problems: _Problems) -> None:
    from .classifiers import NORMS, check_jobs
    from .fetch import PUBLIC_DATASETS
    from .heads import OPTIMIZERS, SCHEDULES, HeadSpec

    for where, rule in ((("report", None, "name"), lambda: report_directory(Path("reports"), study)),
                        (("study", None, "jobs"), lambda: check_jobs(study.study.jobs))):
        try:
            rule()
        except UserError as error:
            problems.add(where, str(error))
    data = study.data
    if bool(data.name) == bool(data.path):
        problems.add(("data", None), "[data] needs exactly one of name (e.g. \"15scene\") or path (a folder)")
    elif data.name and data.name not in PUBLIC_DATASETS:
        problems.add(("data", None, "name"), f"unknown dataset name {data.name!r}; known: {', '.join(PUBLIC_DATASETS)} "
                                              f"(for a folder of your own use path = \"DIR\")")
    elif data.path and not Path(data.path).is_dir():
        problems.add(("data", None, "path"), f"data folder {data.path!r} does not exist (relative to {Path.cwd()})")
    if data.per_class < 0:
        problems.add(("data", None, "per_class"), "per_class must be 0 (all images) or positive")
    if not study.features and study.heads is not None:
        problems.add(("heads", None), "[heads] needs a [[features]] entry to sit on")
    if study.svm is not None and not study.features:
        problems.add(("svm", None), "[svm] needs at least one [[features]] entry")
    for index, entry in enumerate(study.features):
        _check_features(entry, ("features", index), problems)
    if study.svm is not None:
        _check_grid("svm", study.svm.c_grid, problems)
        if study.svm.norm not in NORMS:
            problems.add(("svm", None, "norm"), f"norm must be one of {', '.join(NORMS)}, got {study.svm.norm!r}")
        if study.svm.cv < 2 or study.svm.splits < 1:
            problems.add(("svm", None, "cv"), "cv must be at least 2 and splits at least 1")
    if study.bow is not None:
        _check_grid("bow", study.bow.c_grid, problems)
        bad = [p for p in study.bow.pyramids if p not in (0, 1, 2, 3)]
        if bad or not study.bow.pyramids:
            problems.add(("bow", None, "pyramids"), f"pyramids must be a non-empty list of levels 0-3, got {study.bow.pyramids}")
        if study.bow.step < 1 or study.bow.words < 2 or not study.bow.sizes or min(study.bow.sizes) <= 0:
            problems.add(("bow", None), "bow: step must be ≥ 1, words ≥ 2, sizes non-empty and positive")
    if study.heads is not None:
        heads = study.heads
        for name in heads.names:
            if name.startswith("fc"):  # N is checked against the data's classes when the stage runs
                if name[2:] and not name[2:].isdigit():
                    problems.add(("heads", None, "names"), f"head {name!r}: expected fc or fcN (N = the number of classes)")
                continue
            try:
                HeadSpec.parse(name, 0, heads.dropout)
            except UserError as error:
                problems.add(("heads", None, "names"), str(error).replace("--head ", "head "))
        if not heads.names:
            problems.add(("heads", None, "names"), "names is empty: e.g. [\"fc15\", \"mlp:1024,1024\"]")
        bad = [o for o in heads.optimizers if o not in OPTIMIZERS]
        if bad:
            problems.add(("heads", None, "optimizers"), f"unknown optimizer(s) {bad}; choose from {', '.join(OPTIMIZERS)}")
        if heads.schedule not in SCHEDULES:
            problems.add(("heads", None, "schedule"), f"schedule must be one of {', '.join(SCHEDULES)}")
        if not heads.lrs or min(heads.lrs) <= 0:
            problems.add(("heads", None, "lrs"), "lrs must be a non-empty list of positive learning rates")
        if heads.epochs < 1 or heads.batch_size < 1 or not 0 < heads.val_fraction < 1:
            problems.add(("heads", None), "heads: epochs and batch_size must be positive, val_fraction between 0 and 1")
        if study.features and heads.pooling not in {p for f in study.features for p in f.poolings}:
            problems.add(("heads", None, "pooling"), f"heads.pooling {heads.pooling!r} is not among the features' poolings")

    if study.scratch is not None:
        from .scratch import ARCHITECTURES

        unknown = [a for a in study.scratch.archs if a not in ARCHITECTURES]
        if unknown or not study.scratch.archs:
            problems.add(("scratch", None, "archs"), f"archs must name some of {', '.join(ARCHITECTURES)}; got {study.scratch.archs}")
        if study.scratch.size < 16 or study.scratch.epochs < 1 or study.scratch.lr <= 0 or study.scratch.batch_size < 1:
            problems.add(("scratch", None), "scratch: size must be ≥ 16; epochs, lr and batch_size positive")


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
    sections = {}
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
    _check(study, problems)
    problems.raise_if_any()
    return study

