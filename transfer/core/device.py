"""Device and precision policy, in one place: which device ``auto`` means, which precision ``auto`` means on
it (bf16 only where the hardware computes it), how many loader processes suit it."""

from __future__ import annotations

import functools
import os
import time

from transfer.core.choices import Device, Precision
from transfer.core.config import choice
from transfer.core.console import warn
from transfer.core.errors import UserError


def resolve_device(device: Device | str) -> str:
    import torch

    device = choice(Device, device, "device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)


def native_bf16(device: str) -> bool:
    """Whether the hardware computes bf16 itself (CUDA, or CPUs with AVX512-BF16/AMX) rather than in software."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` is bf16 where the hardware computes it natively, else fp32. An explicit bf16 where it is
    computed in software is kept, with a warning (once) of how much slower it measured."""
    if precision == Precision.AUTO:
        return "bf16" if native_bf16(device) else "fp32"
    if precision == Precision.BF16 and device == "cpu" and not native_bf16(device):
        _warn_software_bf16()
    return str(precision)


@functools.cache
def _warn_software_bf16() -> None:
    warn(f"this CPU has no native bf16 (AVX512-BF16 or AMX): --precision bf16 is computed in software, "
         f"{software_bf16_slowdown():.0f}× slower than fp32 on a test convolution just now; --precision auto "
         f"(fp32 here) gives the same features far faster")


def software_bf16_slowdown() -> float:
    """bf16 time over fp32 time of one small convolution on this CPU (a few milliseconds in fp32)."""
    import torch

    def seconds(dtype) -> float:
        image, weight = torch.ones(1, 32, 56, 56, dtype=dtype), torch.ones(32, 32, 3, 3, dtype=dtype)
        torch.conv2d(image, weight, padding=1)  # warm-up
        begun = time.perf_counter()
        for _ in range(3):
            torch.conv2d(image, weight, padding=1)
        return time.perf_counter() - begun

    with torch.inference_mode():
        return seconds(torch.bfloat16) / max(seconds(torch.float32), 1e-9)


def default_workers(device: str) -> int:
    cores = os.cpu_count() or 1
    # On a CPU the network wants every core. With two or fewer, a loader process beside torch's threads
    # oversubscribes them (a preempted thread stalls every parallel region), which cost more than decoding
    # between batches saves, for slow and fast networks alike (docs/measured-notes.md); with more, one
    # loader process keeps JPEG decoding overlapped.
    if device == "cuda":
        return min(8, cores)
    return 0 if cores <= 2 else (1 if cores <= 4 else 2)


def fp32_means_fp32(device: str, precision: str) -> None:
    """On CUDA, fp32 is computed in fp32: no TF32 products (cuDNN allows them by default)."""
    import torch

    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
