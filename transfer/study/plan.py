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

from transfer.classifiers.training import Compute, epoch_lines
from transfer.core.choices import Probe, StageKind, StageStatus
from transfer.core.console import console, err_console
from transfer.core.errors import DamagedFile, UserError
from transfer.core.files import atomic_write_text
from transfer.core.paths import DATA_ENV, REPORTS_DIR, CacheFolder, default_data_dir
from transfer.data.datasets import ImageDataset, load_dataset
from transfer.features.spec import FeatureSpec
from transfer.runs.labels import BowLabel, FeaturesLabel, FisherLabel, HeadLabel, ProbeLabel, ScratchLabel
from transfer.runs.store import ResultsStore
from transfer.study.schema import (
    CombineSection,
    FeaturesSection,
    Study,
    bow_config,
    combined_parts,
    feature_spec,
    fewshot_config,
    fisher_config,
    grid_config,
    head_spec,
    probe_settings,
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


@dataclass(frozen=True)
class PlanContext:
    """What every stage builder reads: the study, its images, where results go."""

    study: Study
    dataset: ImageDataset
    cache_dir: Path
    overrides: Overrides
    store: ResultsStore
    reports_dir: Path

    def feature_spec(self, entry: FeaturesSection, pooling: str, layers: tuple[str, ...], plain: bool = False):
        return feature_spec(entry, pooling, layers, self.overrides.weights, plain)

    def head_spec(self, head: str):
        return head_spec(self.study, head, len(self.dataset.classes))

    def cached(self, features):
        """The cached extraction a classifier stage would read; None while it is not (completely) extracted."""
        from transfer.features.extract import cached_features

        try:
            return cached_features(self.dataset, features, self.cache_dir)
        except UserError:  # not extracted yet, or damaged (the extraction stage redoes it)
            return None

    def stored(self, key: str, describe: Callable = lambda run: "") -> State:
        """A classifier stage's state: done when the store holds its run and the run's model file is there."""
        run = self.store.find(key)
        if run is None or (run.model_path and not Path(run.model_path).exists()):
            return State(False)
        assert run.id is not None  # a stored run has its id
        return State(True, f"{describe(run)}, run #{run.id}", [run.id])


@dataclass(frozen=True)
class _Extraction:
    """An extraction stage and what the classifier stages on its features need to know of it."""

    stage: Stage
    label: FeaturesLabel  # backbone, pooling and what sets the features apart, for the stage names
    features: FeatureSpec  # the entry's own layers
    head_layers: tuple[str, ...]  # the layers the heads sit on (empty: no heads on this pooling)


def plan_stages(study: Study, dataset: ImageDataset, cache_dir: Path, overrides: Overrides,
                reports_dir: Path = REPORTS_DIR) -> list[Stage]:
    """The stages of one study over one dataset, in dependency order."""

    context = PlanContext(study, dataset, cache_dir, overrides, ResultsStore(CacheFolder(cache_dir).results_path), reports_dir)
    stages: list[Stage] = []
    extract_stages: dict[str, str] = {}  # a named [[features]] entry -> its extraction stage
    for entry in study.features:
        for pooling in entry.poolings:
            extraction = _extraction(context, entry, pooling)
            stages.append(extraction.stage)
            if entry.name:
                extract_stages[entry.name] = extraction.stage.name
            if study.svm is not None:
                probes, _ = probe_settings(study.svm)
                stages += [_svm(context, extraction, (layer,), probe) for layer in entry.layers for probe in probes]
                if entry.combine:
                    stages += [_svm(context, extraction, tuple(entry.layers), probe) for probe in probes]
            if study.fewshot is not None:
                probes, _ = probe_settings(study.fewshot)
                stages += [_fewshot(context, extraction, layer, probe) for layer in entry.layers for probe in probes]
            if extraction.head_layers and study.heads is not None:
                stages += [_head(context, entry, pooling, head, extraction) for head in study.heads.names]
    if study.svm is not None:
        probes, _ = probe_settings(study.svm)
        stages += [_combined_svm(context, section, extract_stages, probe) for section in study.combine for probe in probes]
    if study.bow is not None:
        first_bow: list[str] = []  # BoW stages share the first's vocabulary and words file: they wait for it
        for pyramid in study.bow.pyramids:
            for kernel in study.bow.kernels:
                stages.append(_bow(context, pyramid, kernel, first_bow))
                first_bow = first_bow or [stages[-1].name]
    if study.fisher is not None:
        stages.append(_fisher(context))
    if study.scratch is not None:
        stages += [_scratch(context, arch) for arch in study.scratch.archs]
    if study.report is not None:
        stages.append(_report(context, [stage for stage in stages if stage.kind in CLASSIFIER_KINDS]))
    names = [stage.name for stage in stages]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"the study asks for the same stage twice: {', '.join(repeated)}; "
                        "remove the repeated [[features]] entry (or make it differ)")
    return stages


# The stage kinds whose results are runs in the store: what a report shows.
CLASSIFIER_KINDS = (StageKind.SVM, StageKind.FEWSHOT, StageKind.BOW, StageKind.FISHER, StageKind.HEAD, StageKind.SCRATCH)


def _extraction(context: PlanContext, entry: FeaturesSection, pooling: str) -> _Extraction:
    from transfer.features.cache import complete_layers, describe_file
    from transfer.features.extract import extract, key_device, resolve

    heads = context.study.heads
    head_layers: tuple[str, ...] = ()
    if heads is not None and pooling == heads.pooling:
        head_layers = tuple(dict.fromkeys(context.head_spec(name).input_layer(entry.backbone) for name in heads.names))
    specs = [context.feature_spec(entry, pooling, tuple(entry.layers))]
    if head_layers and (entry.spatial != FeatureSpec.spatial or entry.tokens):
        specs.append(context.feature_spec(entry, pooling, head_layers, plain=True))
    elif head_layers:
        specs[0] = replace(specs[0], layers=tuple(dict.fromkeys(entry.layers + list(head_layers))))
    label = FeaturesLabel.of(asdict(specs[0]))
    name = f"extract {label.where}"
    weights = context.overrides.weights or entry.weights
    if context.overrides.weights or weights != "imagenet":
        name += f" ({weights} weights)"
    options = run_options(entry)

    def check() -> State:
        missing = []
        for spec in specs:
            resolved = resolve(spec, context.cache_dir, key_device(options))
            try:
                done = complete_layers(resolved.path, context.dataset) if resolved.path.exists() else []
            except DamagedFile:  # the extraction moves it aside and starts afresh
                done = []
            missing += [lk for lk in resolved.layer_keys if lk not in done]
        if not missing:
            return State(True, f"{', '.join(layer for s in specs for layer in s.layers)} cached")
        shapes = describe_file(resolved.path).layers if resolved.path.exists() else {}
        return State(False, "to extract: " + ", ".join(f"{lk} ({shapes[lk]})" if lk in shapes else lk for lk in missing))

    def run() -> str:
        outcomes = [extract(context.dataset, spec, context.cache_dir, options) for spec in specs]
        images = sum(o.images for o in outcomes)
        seconds = sum(o.seconds for o in outcomes)
        return (f"{images} images, {images / seconds:.1f} images/s, peak RSS {max(o.peak_rss_mb for o in outcomes):,.0f} MB"
                if seconds else "cached")

    stage = Stage(name, StageKind.EXTRACT, [], check, run, backbone=entry.backbone if weights == "imagenet" else None)
    return _Extraction(stage, label, specs[0], head_layers)


def _accuracy_result(outcome) -> str:
    """A grid outcome's one-line result."""
    mean, _ = outcome.mean_std
    from transfer.classifiers.probes import setting_text

    return f"{100 * mean:.2f}% ({setting_text(outcome.result.chosen)}), run #{outcome.run_id}"


def _probe_setup(context: PlanContext, probe: Probe):
    """The [svm] section's grid, normalisations and ``probe`` with its settings."""
    from transfer.runs.jobs import ProbeSetup

    svm = context.study.svm
    assert svm is not None
    _, knn = probe_settings(svm)
    return grid_config(context.study, svm), svm_norm(svm), ProbeSetup(probe=probe, knn=knn)


def _svm(context: PlanContext, extraction: _Extraction, layers: tuple[str, ...], probe: Probe) -> Stage:
    """One probe (the SVM, or another of [svm]'s probes) on one layer of an extraction, or on several side by side."""
    from transfer.runs.jobs import run_svm

    these = extraction.features.for_layers(layers)
    grid, norms, setup = _probe_setup(context, probe)

    def check() -> State:
        resolved = context.cached(these)
        if resolved is None:
            return State(False)
        key = setup.key(context.dataset.fingerprint, [(resolved.key.digest, list(resolved.layer_keys))],
                        setup.norms(norms), grid)
        return context.stored(key, _accuracy_detail)

    def run() -> str:
        (outcome,) = run_svm(context.dataset, these, context.cache_dir, grid, norms, context.store, combine=len(layers) > 1,
                             probes=(probe,), knn=setup.knn)
        return _accuracy_result(outcome)

    name = ProbeLabel(parts=(replace(extraction.label, layers=layers),), probe=probe).stage_name
    return Stage(name, StageKind.SVM, [extraction.stage.name], check, run)


def _combined_svm(context: PlanContext, section: CombineSection, extract_stages: dict[str, str], probe: Probe) -> Stage:
    """One probe on several named [[features]] entries side by side."""
    from transfer.runs.jobs import run_svm_side_by_side

    parts = combined_parts(context.study, section, context.overrides.weights)
    grid, norms, setup = _probe_setup(context, probe)

    def check() -> State:
        resolved = [context.cached(part) for part in parts]
        if any(r is None for r in resolved):
            return State(False)
        key = setup.key(context.dataset.fingerprint, [(r.key.digest, list(r.layer_keys)) for r in resolved],
                        setup.norms(norms), grid)
        return context.stored(key, _accuracy_detail)

    def run() -> str:
        return _accuracy_result(run_svm_side_by_side(context.dataset, parts, context.cache_dir, grid, norms, context.store,
                                                     setup))

    needs = list(dict.fromkeys(extract_stages[n] for n in section.features))
    name = ProbeLabel(parts=tuple(FeaturesLabel.of(asdict(part)) for part in parts), entries=tuple(section.features),
                      probe=probe).stage_name
    return Stage(name, StageKind.SVM, needs, check, run)


def _fewshot(context: PlanContext, extraction: _Extraction, layer: str, probe: Probe) -> Stage:
    """One probe's few-shot curve on one layer of an extraction: every shot count and seed of [fewshot]."""
    from transfer.runs.fewshot import fewshot_key, run_fewshot
    from transfer.runs.jobs import ProbeSetup

    section = context.study.fewshot
    assert section is not None
    these = extraction.features.for_layers((layer,))
    grid = grid_config(context.study, section)
    curve = fewshot_config(section)
    _, knn = probe_settings(section)
    setup = ProbeSetup(probe=probe, knn=knn)

    def check() -> State:
        resolved = context.cached(these)
        if resolved is None:
            return State(False)
        (layer_key,) = resolved.layer_keys
        runs = [context.store.find(fewshot_key(context.dataset.fingerprint, resolved.key.digest, layer_key, setup, grid,
                                               shots, seed)) for shots in curve.shots for seed in range(curve.seeds)]
        ids = [run.id for run in runs if run is not None and run.id is not None]
        done = len(ids) == len(runs)
        return State(done, f"{len(ids)} of {len(runs)} subsets, runs #{min(ids)}–#{max(ids)}" if ids else "", ids)

    def run() -> str:
        (done,) = run_fewshot(context.dataset, these, context.cache_dir, grid, curve, (probe,), knn, context.store)
        ends = [done.at(shots) for shots in (curve.shots[0], curve.shots[-1])]
        return (" … ".join(f"{cells[0].shots}/class {100 * sum(c.accuracy for c in cells) / len(cells):.2f}%" for cells in ends)
                + f" (mean of {curve.seeds} seeds), {done.seconds:.1f} s")

    name = f"{StageKind.FEWSHOT} {ProbeLabel(parts=(replace(extraction.label, layers=(layer,)),), probe=probe).stage_name}"
    return Stage(name, StageKind.FEWSHOT, [extraction.stage.name], check, run)


def _head(context: PlanContext, entry: FeaturesSection, pooling: str, head: str, extraction: _Extraction) -> Stage:
    from transfer.runs.jobs import head_key, run_head

    heads = context.study.heads
    assert heads is not None
    spec = context.head_spec(head)
    configs = train_configs(context.study)
    layer = spec.input_layer(entry.backbone)
    features = context.feature_spec(entry, pooling, (layer,), plain=True)
    name = HeadLabel(features=extraction.label, head=spec.name).stage_name

    def check() -> State:
        resolved = context.cached(features)
        if resolved is None:
            return State(False)
        return context.stored(head_key(context.dataset.fingerprint, resolved.key.digest, layer, spec, configs), _accuracy_detail)

    def run() -> str:
        outcome = run_head(context.dataset, features, head, configs, context.cache_dir, run_options(entry), heads.dropout,
                           context.store, progress=epoch_lines(name))
        return f"{100 * outcome.result.test_accuracy:.2f}% (epoch {outcome.result.best_epoch}), run #{outcome.run_id}"

    return Stage(name, StageKind.HEAD, [extraction.stage.name], check, run)


def _bow(context: PlanContext, pyramid: int, kernel: str, needs: list[str]) -> Stage:
    from transfer.runs.jobs import bow_key, run_bow

    assert context.study.bow is not None
    config = bow_config(context.study, pyramid, kernel)
    grid = grid_config(context.study, context.study.bow)
    key = bow_key(context.dataset.fingerprint, config, grid)
    return Stage(BowLabel(config=config).stage_name, StageKind.BOW, needs,
                 lambda: context.stored(key, _accuracy_detail),
                 lambda: _accuracy_result(run_bow(context.dataset, config, context.cache_dir, grid, context.store)))


def _fisher(context: PlanContext) -> Stage:
    """Fisher vectors: their own SIFT and mixture, so they wait for no BoW stage."""
    from transfer.runs.jobs import fisher_key, run_fisher

    assert context.study.fisher is not None
    config = fisher_config(context.study)
    grid = grid_config(context.study, context.study.fisher)
    key = fisher_key(context.dataset.fingerprint, config, grid)
    return Stage(FisherLabel(config=config).stage_name, StageKind.FISHER, [],
                 lambda: context.stored(key, _accuracy_detail),
                 lambda: _accuracy_result(run_fisher(context.dataset, config, context.cache_dir, grid, context.store)))


def _scratch(context: PlanContext, arch: str) -> Stage:
    from transfer.classifiers.scratch import ladder, load_images
    from transfer.runs.jobs import run_scratch, scratch_key

    section = context.study.scratch
    assert section is not None
    config = scratch_config(context.study, arch)
    steps, series = (ladder(config), "ladder") if section.ladder else ([("", config)], "single")
    compute = Compute.resolve(precision="fp32")  # CUDA when there is one; fp32 (bf16 moves the ladder's steps)

    def check() -> State:
        found = [context.store.find(scratch_key(context.dataset.fingerprint, c, compute.precision)) for _, c in steps]
        runs = [run for run in found if run is not None]
        if len(runs) < len(steps):
            return State(False)
        return State(True, ", ".join(f"{step or arch} {100 * run.test_accuracy:.1f}%" for (step, _), run in zip(steps, runs)),
                     [run.id for run in runs if run.id is not None])

    def run() -> str:
        outcomes = run_scratch(load_images(context.dataset, section.size), steps, series, context.cache_dir, context.store,
                               progress=epoch_lines, compute=compute)
        return ", ".join(f"{o.step or arch} {100 * o.trained.result.test_accuracy:.1f}%" for o in outcomes)

    return Stage(ScratchLabel.of_config(config, series).stage_name, StageKind.SCRATCH, [], check, run)


def _report(context: PlanContext, classifiers: list[Stage]) -> Stage:
    """The report of whatever the classifier stages have stored: it needs no single one of them. Their runs
    are looked up when it is checked or run, each stage's own `check` saying which runs are its results."""
    from transfer.core.keys import KeyKind, content_key
    from transfer.reports.report import write_report

    report = context.study.report
    assert report is not None
    directory = report_directory(context.reports_dir, context.study)
    inputs = directory / "inputs.json"

    def results() -> tuple[list[int], bool]:
        """The stored run ids of the classifier stages, and whether every stage has its results."""
        states = [stage.check() for stage in classifiers]
        return sorted(i for state in states for i in state.run_ids), all(state.done for state in states)

    def key(run_ids: list[int]) -> str:
        return content_key(KeyKind.REPORT, runs=run_ids, published=report.published)

    def check() -> State:
        run_ids, complete = results()
        if not complete or not (directory / "report.md").exists() or not inputs.exists():
            return State(False)
        return State(json.loads(inputs.read_text()).get("key") == key(run_ids), str(directory / "report.md"))

    def run() -> str:
        run_ids, _ = results()
        ids = set(run_ids)
        runs = [r for r in context.store.runs() if r.id in ids]
        if not runs:
            raise UserError("no classifier stage has a result to report")
        files = write_report(runs, directory, report.published)
        atomic_write_text(inputs, json.dumps({"study": str(context.study.path), "key": key(run_ids), "runs": run_ids}, indent=1))
        return f"{len(runs)} runs → {files.markdown}"

    return Stage("report", StageKind.REPORT, [], check, run)


def _accuracy_detail(run) -> str:
    std = f" ± {100 * run.test_std:.2f}" if run.test_std is not None else ""
    return f"{100 * run.test_accuracy:.2f}%{std}" + (f" ({run.chosen_text})" if run.chosen_text else "")


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
    from transfer.features.registry import get_backbone

    missing: dict[str, str] = {}
    for backbone in dict.fromkeys(backbones):
        reason = get_backbone(backbone).pretrained.missing()
        if reason:
            missing[backbone] = reason
    return missing


