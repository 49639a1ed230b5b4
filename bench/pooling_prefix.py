"""Would the four VGG16 pooling variants gain from sharing what comes before the first pooling?

Everything up to pool1 (conv1_1, relu, conv1_2, relu) is the same network in every variant. Sharing it
means running that prefix once per batch and the rest four times. This times, on the same batch, in
the precision an extraction uses: the prefix, and one variant's whole pass up to relu7. Saving of a
4-variant extraction: 3 × prefix / (4 × whole).

    python bench/pooling_prefix.py [--batch 32] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from transfer.core.device import resolve_precision
from transfer.features.backbones import Weights, build_model, feature_extractor
from transfer.features.registry import get_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    precision = resolve_precision("auto", "cpu")
    backbone = get_backbone("vgg16")
    model = build_model(backbone, Weights.parse("random"), "max")
    whole = feature_extractor(model, [backbone.taps.layers["relu7"].node]).to(memory_format=torch.channels_last)
    prefix = model.features[:4].to(memory_format=torch.channels_last)  # conv1_1, relu, conv1_2, relu
    images = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def best_of(run) -> float:
        times = []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            begun = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                run(images)
            times.append(time.perf_counter() - begun)
        return min(times[1:])

    seconds = {"prefix": best_of(prefix), "whole": best_of(whole)}
    saving = 3 * seconds["prefix"] / (4 * seconds["whole"])
    figures = {"precision": precision, "batch": args.batch, **seconds, "prefix_share": seconds["prefix"] / seconds["whole"],
               "four_variant_saving": saving}
    print(f"VGG16 {precision}, batch {args.batch}: prefix (to pool1) {seconds['prefix']:.2f} s, whole pass to relu7 "
          f"{seconds['whole']:.2f} s ({100 * figures['prefix_share']:.1f}%); sharing it saves "
          f"{100 * saving:.1f}% of a four-variant extraction")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
