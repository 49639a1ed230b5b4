"""VGG16 relu7 extraction, side by side in one run: the machine's matmul peak, the naive way
(fp32, NCHW, PIL preprocessing in a plain loop, as a course notebook writes it), and `transfer`'s
extraction in fp32 and bf16; then parity (bf16 vs fp32 features, Lite0 + LinearSVC accuracy).

Two accountings side by side. The issue's: 15.47 GFLOP per image against torch's matmul peak.
15.47 G is VGG16's count of multiply-accumulates, while a matmul's FLOPs count each of them
twice, so that fraction is half the real one. The counted one: FLOPs as torch's FlopCounterMode
counts them (2 per multiply-accumulate: 30.9 G) against the CPU's own multiply-add peak, measured
by bench/fma_peak.c (when a C compiler is there), which torch's matmul does not reach here.

Each phase runs in a child process of its own, one after the other: in a single process, a phase
inherited the previous one's freed-but-kept memory and malloc settings (fp32 showed a 6.2 GB peak
there against 2.9 GB alone, and 15% fewer images/s), which is nobody's real run. The three VGG16
phases take turns for several rounds and the figures are medians: this virtual machine's speed
drifts by 10-20% over minutes, so one pass of each could compare a fast minute with a slow one.

    python bench/extract.py --data ../shared/datasets/15scene --json bench/extract.json

With ``--backbone B`` (any backbone, e.g. timm:resnet50, timm:vit_small_patch16_224) it measures instead the
pipeline (`transfer extract`: decoding, resizing, the network, cache writes) against a bare ``model(x)``
loop over already-decoded tensors (inference mode, the same batch size, memory order and the precision
``auto`` picks here), in turns, each in a child process; and the fraction of the CPU's multiply-add peak
(bench/fma_peak.c) that the network's counted FLOPs reach:

    python bench/extract.py --data ../shared/datasets/15scene --backbone timm:resnet50

``--runtime eager|compiled|all`` (default all) says which runtimes of the forward pass to measure, each
both ways: the pipeline with ``--runtime`` as a user gives it, and the bare loop eager or through the same
``torch.compile`` options (its compile excluded, timed on full batches only, as the pipeline pads the last).
The bare loop runs with the pipeline's memory settings (`core.memory.keep_freed_memory`). A table per
backbone follows: runtime × images/s × fraction of the multiply-add peak of the precision in use, and the
pipeline against the fastest bare forward.

Run by hand, not in CI. Random weights: speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
import torch

from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import grid_search, linear_svm
from transfer.data.datasets import SPLITS, ImageDataset, load_dataset
from transfer.features.cache import read_features
from transfer.features.extract import extract, resolve
from transfer.features.spec import FeatureSpec, RunOptions

VGG16_GFLOP_PER_IMAGE = 15.47  # the issue's figure for one 224×224 pass: multiply-accumulates, in fact


def in_child(function, *args):
    """``function(*args)`` in a fresh process; returns its result and that process's peak RSS in MB."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, function, *args).result()


def _measured(function, *args):
    # A spawned child takes "spawn" as its default, and its data-loader workers would then start by
    # importing torch (~3 s each); `transfer` runs under the platform's default, as a user's process does.
    multiprocessing.set_start_method(None, force=True)
    result = function(*args)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(dtype: torch.dtype, n: int = 4096, windows: int = 5) -> float:
    """The best of several one-second windows: this virtual machine's speed drifts by 10-20%."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up: thread pool, kernel selection
    best = 0.0
    for _ in range(windows):
        reps, begun = 0, time.perf_counter()
        while time.perf_counter() - begun < 1.0:
            torch.matmul(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - begun) / 1e9)
    return best


def instruction_peak_gflops(threads: int) -> dict[str, float]:
    """The CPU's multiply-add peak per precision (bench/fma_peak.c); {} where it cannot be built. With torch held
    to AVX2 (ATEN_CPU_CAPABILITY=avx2), the AVX2 peak: what an AVX2-only CPU of this clock would have."""
    avx2_only = ["-mno-avx512f"] if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else []
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "fma_peak"
        try:
            subprocess.run(["cc", "-O2", "-march=native", *avx2_only, "-fopenmp", str(Path(__file__).with_name("fma_peak.c")),
                            "-o", str(binary)], check=True, capture_output=True, text=True)
            printed = subprocess.run([str(binary)], check=True, capture_output=True, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"no instruction peak (bench/fma_peak.c needs a C compiler with OpenMP): {error}")
            return {}
    return {precision: float(value) for precision, value in (line.split() for line in printed.splitlines())}


def naive_vgg16_relu7() -> torch.nn.Module:
    """torchvision's VGG16 as it comes (random weights), cut after relu7."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    model = vgg16(weights=None).eval()
    return torch.nn.Sequential(model.features, model.avgpool, torch.nn.Flatten(), *model.classifier[:5])


def counted_gflop_per_image() -> float:
    """FLOPs of one relu7 forward pass as torch counts them (a multiply-accumulate is two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        naive_vgg16_relu7()(torch.zeros(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9


def naive_relu7(paths: list[Path], batch_size: int) -> tuple[float, np.ndarray]:
    """The plain model and loop: torchvision VGG16, fp32, NCHW, PIL transforms in the main process."""
    from PIL import Image
    from torchvision import transforms

    relu7 = naive_vgg16_relu7()
    preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                     transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    outputs = []
    begun = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            images = [preprocess(Image.open(p).convert("L").convert("RGB")) for p in paths[i : i + batch_size]]
            outputs.append(relu7(torch.stack(images)).numpy())
    return len(paths) / (time.perf_counter() - begun), np.concatenate(outputs)


def transfer_features(dataset: ImageDataset, backbone: str, layer: str, precision: str, cache: Path,
                      batch_size: int) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    outcome = extract(dataset, FeatureSpec(backbone=backbone, weights="random" if backbone == "vgg16" else "imagenet", layers=(layer,),
                                           precision=precision), cache, RunOptions(batch_size=batch_size, progress=False))
    data = read_features(outcome.path, layer, dataset)
    figures = {"images_per_s": outcome.images_per_s, "seconds": outcome.seconds,
               "loader_wait_share": outcome.loader_wait_seconds / outcome.seconds}
    return figures, {s: data.splits[s].features for s in SPLITS}, {s: data.splits[s].labels for s in SPLITS}


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def layer_profile(precision: str, batch_size: int) -> list[dict]:
    """Seconds (the fastest of three batches, after one to warm up) and counted GFLOP of each VGG16
    layer up to relu7, run as `transfer` runs it: where the time goes."""
    from torch.utils.flop_counter import FlopCounterMode

    from transfer.core.memory import keep_freed_memory
    from transfer.features.backbones import Weights, build_model, feature_extractor
    from transfer.features.registry import get_backbone

    keep_freed_memory()
    spec = get_backbone("vgg16")
    extractor = feature_extractor(build_model(spec, Weights("random")), [spec.taps.layers["relu7"].node])
    extractor = extractor.to(memory_format=torch.channels_last)
    names = {layer.node: name for name, layer in spec.taps.layers.items()}
    modules = {node: module for node, module in extractor.named_modules() if node and not list(module.children())}
    times: dict[str, list[float]] = {node: [] for node in modules}
    for node, module in modules.items():
        module.register_forward_pre_hook(lambda _m, _i, node=node: times[node].append(-time.perf_counter()))
        module.register_forward_hook(lambda _m, _i, _o, node=node: times[node].__setitem__(-1, times[node][-1] + time.perf_counter()))
    images = torch.randn(batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        with counter:  # the warm-up batch
            extractor(images)
        for _ in range(3):
            extractor(images)
    # Keys are "<model class>.<node>"; a multiply-add counts two FLOPs, as in the peaks.
    flops = {key.partition(".")[2]: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    return [{"layer": names.get(node, node), "kind": type(module).__name__, "seconds": min(times[node][1:]),
             "gflop": flops.get(node, 0) / 1e9} for node, module in modules.items()]


def print_layer_profile(precision: str, layers: list[dict], cpu_peak: float | None) -> None:
    def rate(gflop: float, seconds: float) -> str:
        of_peak = f" = {100 * gflop / seconds / cpu_peak:.0f}% of the CPU's peak" if cpu_peak else ""
        return f"{gflop / seconds:5.0f} GFLOP/s{of_peak}"

    total = sum(r["seconds"] for r in layers)
    print(f"where a batch's time goes, {precision}: {total:.2f} s in the layers")
    for kind in dict.fromkeys(r["kind"] for r in layers):
        rows = [r for r in layers if r["kind"] == kind]
        seconds, gflop = sum(r["seconds"] for r in rows), sum(r["gflop"] for r in rows)
        print(f"  {len(rows):2d} {kind:10} {seconds:6.2f} s ({100 * seconds / total:4.1f}%)" + (f", {rate(gflop, seconds)}" if gflop else ""))
        for r in rows if gflop else []:
            print(f"       {r['layer']:8} {r['seconds']:6.3f} s  {rate(r['gflop'], r['seconds'])}")


def _backbone_images(backbone: str, paths: list[Path]) -> torch.Tensor:
    """The images decoded and preprocessed as the pipeline does it, all in memory (what the bare loop reads)."""
    from transfer.features.forward import ImageFiles
    from transfer.features.registry import get_backbone

    preprocessing = get_backbone(backbone).pretrained.preprocessing
    images = ImageFiles(paths, preprocessing)
    return preprocessing.normalise(torch.cat([images[i][0] for i in range(len(images))]))


def bare_images_per_s(backbone: str, paths: list[Path], precision: str, batch_size: int,
                      runtime: str = "eager", weights: str = "random") -> tuple[float, float]:
    """A bare ``model(x)`` loop over decoded tensors, eager or compiled: the network's speed alone, after one
    warm-up batch (which compiles); (images/s over the full batches, compile seconds or 0)."""
    from transfer.core.memory import keep_freed_memory
    from transfer.features.backbones import Weights, build_model
    from transfer.features.registry import get_backbone
    from transfer.features.runtime import COMPILE_OPTIONS

    keep_freed_memory()
    images = _backbone_images(backbone, paths).contiguous(memory_format=torch.channels_last)
    model = build_model(get_backbone(backbone), Weights.parse(weights)).eval().to(memory_format=torch.channels_last)
    forward = torch.compile(model, options=COMPILE_OPTIONS) if runtime == "compiled" else model
    full = len(images) // batch_size * batch_size
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        begun = time.perf_counter()
        forward(images[:batch_size])
        compile_seconds = time.perf_counter() - begun if runtime == "compiled" else 0.0
        begun = time.perf_counter()
        for i in range(0, full, batch_size):
            forward(images[i : i + batch_size])
    return full / (time.perf_counter() - begun), compile_seconds


def pipeline_images_per_s(dataset: ImageDataset, backbone: str, cache: Path, batch_size: int,
                          runtime: str = "auto", weights: str = "random") -> tuple[float, str, float, str]:
    """`transfer extract` of the backbone's default layer into an empty cache: (images/s, precision, loader
    wait share, what ran the forward pass)."""
    features = FeatureSpec(backbone=backbone, weights=weights)
    outcome = extract(dataset, features, cache, RunOptions(batch_size=batch_size, progress=False, runtime=runtime))
    ran = outcome.runtime.describe() if outcome.runtime else ""
    return outcome.images_per_s, resolve(features, cache).key.precision, outcome.loader_wait_seconds / outcome.seconds, ran


def parity_cosines(dataset: ImageDataset, backbone: str, cache: Path, batch_size: int,
                   weights: str = "random") -> dict[str, float]:
    """The pipeline's fp32 features of the default layer against the library's own forward with its classifier
    replaced by an identity (its pooled features) on the same preprocessed tensors; and bf16's against fp32's."""
    from transfer.features.backbones import Weights, build_model
    from transfer.features.registry import get_backbone

    spec = get_backbone(backbone)
    cached = {}
    for precision in ("fp32", "bf16"):
        features = FeatureSpec(backbone=backbone, weights=weights, precision=precision)
        outcome = extract(dataset, features, cache, RunOptions(batch_size=batch_size, progress=False))
        (key,) = features.layer_nodes()
        cached[precision] = np.concatenate([read_features(outcome.path, key, dataset).splits[s].features for s in SPLITS])
    model = build_model(spec, Weights.parse(weights))
    parent, _, child = spec.architecture.fc_head_module.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, torch.nn.Identity())
    images = _backbone_images(backbone, [dataset.path(s) for split in SPLITS for s in dataset.samples(split)])
    with torch.inference_mode():
        own = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()

    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)

    fp32, bf16 = cosines(cached["fp32"], own), cosines(cached["bf16"], cached["fp32"])
    return {"images": len(own), "fp32_vs_library_min": float(fp32.min()), "fp32_vs_library_mean": float(fp32.mean()),
            "bf16_vs_fp32_min": float(bf16.min()), "bf16_vs_fp32_mean": float(bf16.mean())}


def backbone_gflop_per_image(backbone: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from transfer.features.backbones import Weights, build_model
    from transfer.features.registry import get_backbone

    spec = get_backbone(backbone)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        build_model(spec, Weights("random"))(torch.zeros(1, 3, spec.pretrained.preprocessing.crop, spec.pretrained.preprocessing.crop))
    return counter.get_total_flops() / 1e9


def compare_with_bare_loop(args, dataset: ImageDataset) -> None:
    paths = [dataset.path(s) for split in SPLITS for s in dataset.samples(split)]
    gflop = backbone_gflop_per_image(args.backbone)
    cpu_peak = instruction_peak_gflops(torch.get_num_threads())
    print(f"{args.backbone}: {len(paths)} images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{gflop:.2f} GFLOP per image (FlopCounterMode), torch {torch.__version__}")
    runtimes = ["eager", "compiled"] if args.runtime == "all" else [args.runtime]
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            for runtime in runtimes:  # in turns, so that a drift of the machine's speed moves them together
                (pipeline, precision, waited, ran), rss = in_child(
                    pipeline_images_per_s, dataset, args.backbone, Path(tmp) / f"round{number}-{runtime}", args.batch_size,
                    runtime, args.weights)
                (bare, compile_seconds), _ = in_child(bare_images_per_s, args.backbone, paths, precision, args.batch_size,
                                                      runtime, args.weights)
                rounds.append({"round": number, "runtime": runtime, "pipeline": pipeline, "bare": bare,
                               "ratio": pipeline / bare, "precision": precision, "loader_wait_share": waited,
                               "peak_rss_mb": rss, "bare_compile_seconds": compile_seconds, "pipeline_ran": ran})
                print(f"round {number + 1}, {runtime} ({precision}): pipeline {pipeline:.1f} images/s ({ran or 'eager'}), "
                      f"bare model(x) {bare:.1f} images/s" + (f" (compile {compile_seconds:.1f} s)" if compile_seconds else "")
                      + f", ratio {pipeline / bare:.3f}, loader wait {100 * waited:.1f}%", flush=True)
        parity, _ = in_child(parity_cosines, dataset.limited(4), args.backbone, Path(tmp) / "parity", args.batch_size,
                             args.weights)
    precision = rounds[0]["precision"]
    peak = cpu_peak.get(precision)
    table = {}
    for runtime in runtimes:
        mine = [r for r in rounds if r["runtime"] == runtime]
        table[runtime] = {name: median(r[name] for r in mine) for name in ("pipeline", "bare", "ratio")}
    fastest = max(table, key=lambda runtime: table[runtime]["bare"])
    for runtime, row in table.items():
        # Each round's pipeline against that round's fastest bare forward, then the median.
        row["vs_fastest_bare"] = median(r["pipeline"] / max(o["bare"] for o in rounds if o["round"] == r["round"])
                                        for r in rounds if r["runtime"] == runtime)
        if peak:
            row["fraction_of_instruction_peak"] = {name: row[name] * gflop / peak for name in ("pipeline", "bare")}
    figures = {"parity": parity, "backbone": args.backbone, "images": len(paths), "precision": precision,
               "gflop_per_image": gflop, "instruction_peak_gflops": cpu_peak, "cpu": _cpu(), "rounds": rounds,
               "runtimes": table, "fastest_bare": fastest}
    print(f"\n{args.backbone}, {precision}, batch {args.batch_size}, {len(paths)} images, on {_cpu()}; medians of "
          f"{args.rounds} rounds" + (f"; % of the {precision} multiply-add peak ({peak:.0f} GFLOP/s, fma_peak.c)" if peak else ""))
    print(f"| runtime | pipeline images/s | bare images/s | pipeline % peak | bare % peak | pipeline / its bare "
          f"| pipeline / fastest bare ({fastest}) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for runtime, row in table.items():
        shares = row.get("fraction_of_instruction_peak", {})
        print(f"| {runtime} | {row['pipeline']:.1f} | {row['bare']:.1f} | "
              + " | ".join(f"{100 * shares[n]:.1f}%" if shares else "" for n in ("pipeline", "bare"))
              + f" | {row['ratio']:.3f} | {row['vs_fastest_bare']:.3f} |")
    print(f"parity on {parity['images']} images, cosine per image: the pipeline's fp32 against the library's own "
          f"forward {parity['fp32_vs_library_min']:.6f} (min); bf16 against fp32 {parity['bf16_vs_fp32_min']:.5f} (min), "
          f"{parity['bf16_vs_fp32_mean']:.5f} (mean)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")


def _cpu() -> str:
    """The processor's model, its core count and whether it has AVX-512 and native bf16 (as /proc/cpuinfo says)."""
    from transfer.features.runtime import machine

    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    limited = f", held to {capability} (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)" if capability else ""
    return (f"{machine()}, {os.cpu_count()} CPUs, avx512f {'avx512f' in flags}, avx512_bf16 {'avx512_bf16' in flags}"
            f"{limited}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/15scene"))
    parser.add_argument("--limit", type=int, default=480, help="VGG16 images (spread over classes and splits); 0: all")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="naive, fp32, bf16 in turn, this many times (medians)")
    parser.add_argument("--no-lite0", action="store_true", help="skip the Lite0 + LinearSVC parity (all images)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--backbone", help="instead: this backbone's pipeline against a bare model(x) loop")
    parser.add_argument("--runtime", choices=["eager", "compiled", "all"], default="all",
                        help="with --backbone: the runtimes of the forward pass to measure")
    parser.add_argument("--weights", default="random",
                        help="with --backbone: the weights (speed does not depend on them; the parity check does where "
                             "random features vanish, as EfficientNet-Lite's do: give imagenet there)")
    args = parser.parse_args()

    full = load_dataset(args.data)
    per_class = math.ceil(args.limit / (2 * len(full.classes))) if args.limit else 0
    dataset = full.limited(per_class) if per_class else full
    if args.backbone:
        compare_with_bare_loop(args, dataset)
        return
    paths = [dataset.path(s) for split in SPLITS for s in dataset.samples(split)]
    print(f"{len(paths)} images, {torch.get_num_threads()} threads, torch {torch.__version__}")
    figures: dict = {"images": len(paths), "threads": torch.get_num_threads(), "gflop_per_image": VGG16_GFLOP_PER_IMAGE}

    figures["peak_gflops"] = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    peak = figures["peak_gflops"]
    figures["counted_gflop_per_image"] = counted = counted_gflop_per_image()
    figures["instruction_peak_gflops"] = cpu_peak = instruction_peak_gflops(torch.get_num_threads())

    with tempfile.TemporaryDirectory() as tmp:
        figures["rounds"] = rounds = []
        features = {}
        for number in range(args.rounds):
            (rate, naive_features), rss = in_child(naive_relu7, paths, args.batch_size)
            round_ = {"naive": {"images_per_s": rate, "peak_rss_mb": rss}}
            for precision in ("fp32", "bf16"):
                (result, split_features, _), rss = in_child(transfer_features, dataset, "vgg16", "relu7", precision,
                                                            Path(tmp) / f"round{number}", args.batch_size)
                round_[precision] = {**result, "peak_rss_mb": rss,
                                     "speedup_vs_naive": result["images_per_s"] / round_["naive"]["images_per_s"]}
                features[precision] = np.concatenate([split_features[s] for s in SPLITS])
            rounds.append(round_)
            print(f"round {number + 1}: " + ", ".join(
                f"{name} {row['images_per_s']:.2f} images/s" + (f" ({row['speedup_vs_naive']:.2f}×)" if name != "naive" else "")
                for name, row in round_.items()), flush=True)
        for name, matching_peak in (("naive", "fp32"), ("fp32", "fp32"), ("bf16", "bf16")):
            # Medians over the rounds; a speed-up is the median of each round's own ratio, since a drift
            # of the machine's speed moves the phases of one round together.
            row = figures[name] = {"images_per_s": median(r[name]["images_per_s"] for r in rounds),
                                   "peak_rss_mb": max(r[name]["peak_rss_mb"] for r in rounds),
                                   "speedup_vs_naive": median(r[name].get("speedup_vs_naive", 1.0) for r in rounds)}
            if name != "naive":
                row["loader_wait_share"] = median(r[name]["loader_wait_share"] for r in rounds)
            row["gflops"] = row["images_per_s"] * VGG16_GFLOP_PER_IMAGE
            row["fraction_of_peak"] = row["gflops"] / peak[matching_peak]
            row["counted_gflops"] = row["images_per_s"] * counted
            if matching_peak in cpu_peak:
                row["fraction_of_instruction_peak"] = row["counted_gflops"] / cpu_peak[matching_peak]
        if "bf16" in cpu_peak:  # the most any bf16 extraction could do on this CPU: every cycle a multiply-add
            ceiling = cpu_peak["bf16"] / counted
            figures["bf16_ceiling"] = {"images_per_s": ceiling, "speedup_vs_naive": ceiling / figures["naive"]["images_per_s"]}
        figures["parity"] = {
            "cosine": mean_cosine(features["bf16"], features["fp32"]),
            "fp32_vs_naive_max_abs_diff": float(np.abs(features["fp32"] - naive_features).max()),
            "fp32_vs_naive_max_abs": float(np.abs(naive_features).max()),
        }
        figures["layers"] = {precision: in_child(layer_profile, precision, args.batch_size)[0] for precision in ("fp32", "bf16")}
        if not args.no_lite0:
            grid = GridConfig()
            for precision in ("fp32", "bf16"):
                (result, x, y), _ = in_child(transfer_features, full, "efficientnet_lite0", "avgpool", precision,
                                             Path(tmp), args.batch_size)
                svm = grid_search(linear_svm("l2"), (x["train"], y["train"]), (x["test"], y["test"]), grid, len(full.classes))
                figures["parity"][f"svm_acc_{precision}"] = svm.test_accuracy
                figures["parity"][f"lite0_images_per_s_{precision}"] = result["images_per_s"]

    print(f"GFLOP/s and % peak: the issue's {VGG16_GFLOP_PER_IMAGE} per image against torch's matmul peak; "
          f"counted: {counted:.2f} per image (FlopCounterMode) against the CPU's multiply-add peak (fma_peak.c)")
    print(f"{'':8} {'images/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'counted':>8} {'% CPU':>6} {'× naive':>8} "
          f"{'peak RSS MB':>12} {'loader %':>9}")
    for precision in ("fp32", "bf16"):
        print(f"{'peak':8} {'':>9} {peak[precision]:8.0f} {precision:>7} {cpu_peak.get(precision, float('nan')):8.0f} {precision:>6}")
    for name in ("naive", "fp32", "bf16"):
        row = figures[name]
        loader = f"{100 * row['loader_wait_share']:.1f}" if "loader_wait_share" in row else ""
        of_cpu = f"{100 * row['fraction_of_instruction_peak']:5.1f}%" if "fraction_of_instruction_peak" in row else ""
        print(f"{name:8} {row['images_per_s']:9.2f} {row['gflops']:8.1f} {100 * row['fraction_of_peak']:6.1f}% "
              f"{row['counted_gflops']:8.1f} {of_cpu:>6} {row['speedup_vs_naive']:7.2f}× {row['peak_rss_mb']:12.0f} {loader:>9}")
    if "bf16_ceiling" in figures:
        ceiling = figures["bf16_ceiling"]
        print(f"bf16 ceiling (every cycle a bf16 multiply-add): {ceiling['images_per_s']:.2f} images/s = "
              f"{ceiling['speedup_vs_naive']:.2f}× naive")
    for precision, layers in figures["layers"].items():
        print_layer_profile(precision, layers, cpu_peak.get(precision))
    print("parity:", json.dumps(figures["parity"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
