"""The runtime of the forward pass: eager PyTorch, or the feature extractor compiled by `torch.compile` with
inductor's freezing (weights folded in as constants, batch norm folded into convolutions, weights
prepacked). Which one is faster depends on the network and the CPU, so ``auto`` measures both on the
first extraction of a configuration and remembers the speeds in the cache folder; it compiles only where
the images to extract are enough for the saving to pay back the compile. The features do not depend on
the runtime (a test pins compiled against eager), so it is not part of any key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transfer.core.choices import Runtime, View
from transfer.core.console import err_console, warn
from transfer.core.files import atomic_write_text
from transfer.features.backbones import Preprocessing

if TYPE_CHECKING:
    import torch

MEMO_FILE = "runtimes.json"  # in the cache folder: measured speeds per configuration and machine
COMPILE_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"freezing": True}  # inductor's: parameters become constants, batch norm folds into convolutions
TIMED_BATCHES = 2  # per runtime, after one untimed batch
# Without a measurement, ``auto`` tries compiling only when the eager extraction would take at least this
# long: a compile of a large network takes tens of seconds, and a short extraction could not pay it back.
MIN_EAGER_SECONDS_TO_TRY = 60.0

Forward = Callable[[Any], dict]


@dataclass(frozen=True, kw_only=True)
class RuntimeChoice:
    runtime: Runtime  # what runs: eager or compiled
    reason: str
    eager_images_per_s: float | None = None
    compiled_images_per_s: float | None = None
    compile_seconds: float | None = None

    def describe(self) -> str:
        speeds = [f"{name} {rate:.1f} images/s" for name, rate in
                  (("eager", self.eager_images_per_s), ("compiled", self.compiled_images_per_s)) if rate]
        if self.compile_seconds:
            speeds.append(f"compile {self.compile_seconds:.1f} s")
        return f"runtime {self.runtime}: {self.reason}" + (f" ({', '.join(speeds)})" if speeds else "")

    def as_dict(self) -> dict:
        return {**asdict(self), "runtime": str(self.runtime)}

    @classmethod
    def from_dict(cls, fields: dict) -> RuntimeChoice:
        return cls(**{**fields, "runtime": Runtime(fields["runtime"])})


def machine() -> str:
    """What the speeds of a runtime depend on besides the configuration: the processor and torch."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"


class _Padded:
    """A compiled extractor that always sees its first batch's size: a smaller last batch is padded with
    zeros and its outputs cut back, so that no new shape triggers a second compile."""

    def __init__(self, compiled: Forward) -> None:
        self.compiled, self.size = compiled, 0

    def __call__(self, images):
        import torch

        if not images.is_inference():  # the compiled graph's guards expect an inference tensor, as the loaders'
            with torch.inference_mode():  # batches are; another kind of tensor would compile it again
                images = images.clone()
        count = len(images)
        self.size = self.size or count
        if count >= self.size:
            return self.compiled(images)
        padding = images.new_zeros((self.size - count, *images.shape[1:]))
        padded = torch.cat([images, padding]).contiguous(memory_format=torch.channels_last)
        return {node: value[:count] for node, value in self.compiled(padded).items()}


def _run(forward: Forward, batch, device: str, precision: str, times: int) -> float:
    """Seconds of ``times`` forward passes of ``batch``, as `forward.network_batches` runs them."""
    import torch

    begun = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(times):
            forward(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - begun


def _compiled(extractor: torch.nn.Module, batch, device: str, precision: str) -> tuple[Forward, float] | str:
    """The compiled extractor and its compile seconds (the first pass of ``batch``); or why it could not be."""
    import torch

    try:
        compiled = _Padded(torch.compile(extractor, options=COMPILE_OPTIONS))
        return compiled, _run(compiled, batch, device, precision, 1)
    except Exception as error:  # noqa: BLE001 -- any failure of the compiler means: run eager
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]


def _images_per_s(forward: Forward, batch, device: str, precision: str) -> float:
    _run(forward, batch, device, precision, 1)  # kernels chosen, memory allocated
    return len(batch) * TIMED_BATCHES / _run(forward, batch, device, precision, TIMED_BATCHES)


def _pays_back(images: int, eager: float, compiled: float, compile_seconds: float) -> bool:
    return compiled > eager and images / eager - images / compiled > compile_seconds


class RuntimeMemo:
    """The measured speeds, by configuration and machine, in the cache folder (JSON, rewritten atomically)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else Path(folder) / MEMO_FILE

    def _all(self) -> dict:
        try:
            return json.loads(self.path.read_text()) if self.path is not None and self.path.exists() else {}
        except (OSError, ValueError):  # unreadable or damaged: measured again
            return {}

    def get(self, key: str) -> dict | None:
        found = self._all().get(key)
        return found if isinstance(found, dict) and {"eager", "compiled", "compile_seconds"} <= set(found) else None

    def put(self, key: str, eager: float, compiled: float, compile_seconds: float) -> None:
        if self.path is None:
            return
        memo = self._all()
        memo[key] = {"eager": eager, "compiled": compiled, "compile_seconds": compile_seconds}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(memo, indent=1, sort_keys=True))


@dataclass(frozen=True, kw_only=True)
class ForwardSetting:
    """What a forward pass's speed depends on, besides the machine; picklable (Ray actors receive it)."""

    backbone: str
    nodes: tuple[str, ...]
    preprocessing: Preprocessing
    precision: str
    device: str
    batch_size: int  # images per batch, as the loader makes them
    memo_folder: Path | None  # the cache folder

    def inputs(self, images: int) -> int:
        """Network inputs per batch of an extraction of ``images`` images (each view one)."""
        per_batch = min(self.preprocessing.images_per_batch(self.batch_size), max(images, 1))
        return per_batch * View(self.preprocessing.views).images

    def configuration(self, images: int) -> str:
        return (f"{self.backbone} | {','.join(sorted(set(self.nodes)))} | {self.precision} | "
                f"{self.inputs(images)} inputs of {self.preprocessing.crop} px")


def remembered(setting: ForwardSetting, images: int) -> Runtime:
    """``auto`` from the measured speeds alone (no measuring now): compiled where it was faster and pays back."""
    known = RuntimeMemo(setting.memo_folder).get(f"{setting.configuration(images)} | {setting.device} | {machine()}")
    pays = known is not None and _pays_back(images, known["eager"], known["compiled"], known["compile_seconds"])
    return Runtime.COMPILED if pays else Runtime.EAGER


def forward_for(extractor: torch.nn.Module, setting: ForwardSetting, runtime: Runtime | str,
                images: int) -> tuple[Forward, RuntimeChoice]:
    """The forward pass of ``runtime`` for an extraction of ``images`` images, its choice said once."""
    import torch

    preprocessing = setting.preprocessing
    with torch.inference_mode():  # as the batches of an extraction are made: the compiled graph's guards see the same
        batch = torch.randn(setting.inputs(images), 3, preprocessing.crop, preprocessing.crop, device=setting.device)
    forward, chosen = choose_forward(
        extractor, runtime=runtime, batch=batch.contiguous(memory_format=torch.channels_last), device=setting.device,
        precision=setting.precision, images=images * View(preprocessing.views).images, memo=RuntimeMemo(setting.memo_folder),
        configuration=setting.configuration(images),
        on_compile=lambda: err_console.print(f"compiling {setting.backbone}'s forward pass (torch.compile; the compiled "
                                         f"graph is cached for later runs)"))
    if runtime != Runtime.EAGER:
        err_console.print(chosen.describe())
    return forward, chosen


def choose_forward(extractor: torch.nn.Module, *, runtime: Runtime | str, batch, device: str, precision: str,
                   images: int, memo: RuntimeMemo, configuration: str,
                   on_compile: Callable[[], None] | None = None) -> tuple[Forward, RuntimeChoice]:
    """The forward pass to run ``images`` network inputs (images × views) with, in batches like ``batch`` (on
    ``device``), and why. ``configuration`` names what the speeds depend on besides the machine."""
    eager = RuntimeChoice(runtime=Runtime.EAGER, reason="asked for")
    if runtime == Runtime.EAGER:
        return extractor, eager
    key = f"{configuration} | {device} | {machine()}"
    known = memo.get(key) if runtime == Runtime.AUTO else None
    measured: dict[str, float] = {}
    if runtime == Runtime.AUTO:
        if known is not None:
            if not _pays_back(images, known["eager"], known["compiled"], known["compile_seconds"]):
                why = "faster than compiled here" if known["eager"] >= known["compiled"] else \
                      f"too few images ({images}) to pay back a compile"
                return extractor, RuntimeChoice(runtime=Runtime.EAGER, reason=f"measured earlier: {why}",
                                                eager_images_per_s=known["eager"], compiled_images_per_s=known["compiled"],
                                                compile_seconds=known["compile_seconds"])
        else:
            # One pass, its first (slower) one, tells whether the eager extraction is long enough to try: a
            # short one is not worth three more passes, let alone a compile.
            first_pass = len(batch) / _run(extractor, batch, device, precision, 1) if images > len(batch) else 0.0
            if images <= len(batch) or images / first_pass < MIN_EAGER_SECONDS_TO_TRY:
                about = f"about {images / first_pass:.0f} s eager" if first_pass else "one batch"
                return extractor, RuntimeChoice(runtime=Runtime.EAGER, reason=(
                    f"{images} images ({about}) are too few to try compiling: tried from {MIN_EAGER_SECONDS_TO_TRY:.0f} s"))
            measured["eager"] = _images_per_s(extractor, batch, device, precision)
    if on_compile is not None:
        on_compile()
    outcome = _compiled(extractor, batch, device, precision)
    if isinstance(outcome, str):
        warn(f"the forward pass could not be compiled ({outcome}); running it eager")
        return extractor, RuntimeChoice(runtime=Runtime.EAGER, reason=f"the compile failed: {outcome}")
    compiled, compile_seconds = outcome
    if runtime == Runtime.COMPILED:
        return compiled, RuntimeChoice(runtime=Runtime.COMPILED, reason="asked for", compile_seconds=compile_seconds)
    if known is not None:
        return compiled, RuntimeChoice(runtime=Runtime.COMPILED, reason="measured earlier: faster, and pays back its compile",
                                       eager_images_per_s=known["eager"], compiled_images_per_s=known["compiled"],
                                       compile_seconds=compile_seconds)
    measured["compiled"] = _images_per_s(compiled, batch, device, precision)
    memo.put(key, measured["eager"], measured["compiled"], compile_seconds)
    faster = measured["compiled"] > measured["eager"]
    return (compiled if faster else extractor), RuntimeChoice(
        runtime=Runtime.COMPILED if faster else Runtime.EAGER, reason="measured now: " + ("faster" if faster else "no faster"),
        eager_images_per_s=measured["eager"], compiled_images_per_s=measured["compiled"], compile_seconds=compile_seconds)
