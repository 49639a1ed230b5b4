"""What the feature cache's Fletcher-32 checksums cost: write and read one layer-sized array with and
without the filter, alternating, in one process (these machines drift: compare within one run).

    .venv/bin/python bench/checksum.py [--rows 1500] [--dims 25088] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def _time_layer(path: Path, data: np.ndarray, checksum: bool, batch: int) -> tuple[float, float]:
    """(write seconds, read seconds) of ``data`` written batch by batch as the cache does."""
    begun = time.perf_counter()
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("x", shape=data.shape, dtype=np.float32, chunks=(batch, data.shape[1]),
                                    fletcher32=checksum)
        for start in range(0, len(data), batch):
            dataset[start : start + batch] = data[start : start + batch]
    written = time.perf_counter() - begun
    begun = time.perf_counter()
    with h5py.File(path, "r") as h5:
        read = h5["x"][:]
    seconds = time.perf_counter() - begun
    assert np.array_equal(read, data)
    return written, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--dims", type=int, default=25088)  # VGG16 pool5
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = np.random.default_rng(0).random((args.rows, args.dims), dtype=np.float32)
    megabytes = data.nbytes / 2**20
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "fletcher32": []}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name in times:
                times[name].append(_time_layer(Path(folder) / f"{name}.h5", data, name == "fletcher32", args.batch))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{name} write {w:.2f} s read {r:.2f} s" for name, ((w, r),) in ((n, t[-1:]) for n, t in times.items())))
    result = {"megabytes": megabytes}
    for name, rounds in times.items():
        write, read = (float(np.median([r[i] for r in rounds])) for i in (0, 1))
        result[name] = {"write_seconds": write, "read_seconds": read, "read_mb_per_s": megabytes / read}
    result["read_ratio"] = result["fletcher32"]["read_seconds"] / result["plain"]["read_seconds"]
    result["write_ratio"] = result["fletcher32"]["write_seconds"] / result["plain"]["write_seconds"]
    print(f"{args.rows}×{args.dims} float32 ({megabytes:,.0f} MB), medians of {args.rounds} rounds:")
    for name in times:
        print(f"  {name:10s} write {result[name]['write_seconds']:.2f} s, read {result[name]['read_seconds']:.2f} s "
              f"({result[name]['read_mb_per_s']:,.0f} MB/s)")
    print(f"  checksummed / plain: write {result['write_ratio']:.2f}×, read {result['read_ratio']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
