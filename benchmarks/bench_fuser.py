"""A warm `Fuser` against a one-shot `fuse_result` per set, on one shared pair, with the warm
call's time per pipeline stage.

    python benchmarks/bench_fuser.py [--pair multifocus/lytro-10] [--runs 5] [--backend ort]
                                     [--preset blend] [--method max]

Runs alternate (one-shot, warm, one-shot, ...) after one warm-up of each; medians are
printed as a markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from semfuse_rt.engine.api import Fuser, fuse_result
from semfuse_rt.engine.fuse.fuser import run_description
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def pair_paths(name: str) -> list[Path]:
    folder, stem = name.split("/")
    found = sorted((DATASETS / folder).glob(f"{stem}*"))
    if len(found) < 2:
        raise SystemExit(f"bench_fuser: no set {name} under {DATASETS}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="multifocus/lytro-10")
    parser.add_argument("--runs", type=int, default=5)
    # None: the method's default (auto, DEFAULT_PRESET); `cam` optimises nothing, so neither applies to it.
    parser.add_argument("--backend", help="default: auto, for the methods that optimise")
    parser.add_argument("--preset", help=f"default: {DEFAULT_PRESET}, for the methods that optimise")
    parser.add_argument("--method", default="max")
    args = parser.parse_args()
    images = [load_image(p) for p in pair_paths(args.pair)]
    options = {name: value for name, value in (("backend", args.backend), ("preset", args.preset))
               if value is not None}
    one_shot, warm, stages = [], [], []
    with Fuser(args.method, **options) as fuser:
        fuser(images)
        fuse_result(images, args.method, **options)
        for _ in range(args.runs):
            started = time.perf_counter()
            fuse_result(images, args.method, **options)
            one_shot.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = fuser(images)
            warm.append(time.perf_counter() - started)
            stages.append(result.stages)
    height, width = images[0].shape[:2]
    what = run_description(result.method, result.preset, result.backend)
    print(f"{args.pair}: {len(images)} x {width}x{height}, {what}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; medians of {args.runs}")
    print("\n| call | median s |\n| --- | ---: |")
    print(f"| one-shot fuse_result (sets up every call) | {statistics.median(one_shot):.3f} |")
    print(f"| warm Fuser call | {statistics.median(warm):.3f} |")
    print("\n| stage of the warm call | median s |\n| --- | ---: |")
    for stage in stages[0]:
        print(f"| {stage} | {statistics.median(s[stage] for s in stages):.3f} |")


if __name__ == "__main__":
    main()
