"""Throughput of `fuse-batch`: 1 and 2 worker processes, and a local Ray instance with 1 and 2
actors, in one run, on a copy of shared sets.

    python benchmarks/bench_batch.py [--category multifocus] [--sets 8] [--repeats 3]
                                     [--steps N] [--backend auto] [--no-ray]

Each run is a whole batch as the command does it, into an empty folder: workers or actors
started (and the Ray instance, for Ray), every set read, fused and written. Configurations
alternate within each repeat; the table shows median sets per second and the ratio to 1
worker, and the run checks that every configuration wrote the same bytes.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from semfuse_rt.engine.backends.ort.loader import cores
from semfuse_rt.engine.streams.batch import plan_batch, run_batch
from semfuse_rt.engine.evaluation.datasets import find_sets

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def copy_sets(category: str, count: int, into: Path) -> Path:
    """The first `count` sets of a shared category, copied so that the shared folder is only read."""
    sets = find_sets(DATASETS / category).sets[:count]
    if len(sets) < count:
        raise SystemExit(f"bench_batch: {DATASETS / category} has {len(sets)} sets, fewer than {count}")
    for fusion_set in sets:
        for source in fusion_set.sources:
            target = into / category / source.relative_to(DATASETS / category)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="multifocus")
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    options = dict(backend=args.backend, **({"steps": args.steps} if args.steps is not None else {}))

    configurations = {"1 worker": lambda plan: run_batch(plan, workers=1, **options),
                      "2 workers": lambda plan: run_batch(plan, workers=2, **options)}
    if not args.no_ray:
        from semfuse_rt.engine.streams.ray_batch import run_ray_batch

        configurations["Ray local, 1 actor"] = lambda plan: run_ray_batch(plan, actors=1, **options)
        configurations["Ray local, 2 actors"] = lambda plan: run_ray_batch(plan, actors=2, **options)

    rates: dict[str, list[float]] = {name: [] for name in configurations}
    written: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        scratch = Path(scratch)
        sets = find_sets(copy_sets(args.category, args.sets, scratch / "sets")).sets
        size = "x".join(map(str, _size(sets[0].sources[0])))
        for repeat in range(args.repeats):
            for name, run in configurations.items():
                outdir = scratch / f"out-{repeat}-{len(rates[name])}-{name.replace(' ', '_').replace(',', '')}"
                report = run(plan_batch(sets, outdir))
                if not report.ok:
                    raise SystemExit(f"bench_batch: {name}: {report.failed[0].key}: {report.failed[0].error}")
                rates[name].append(report.sets_per_second)
                written[name] = outputs(outdir)
                shutil.rmtree(outdir)
    reference = written["1 worker"]
    identical = all(found == reference for found in written.values())
    base = statistics.median(rates["1 worker"])
    print(f"fuse-batch throughput: {len(sets)} sets of {args.category} ({size}), "
          f"options {options}; {platform.processor() or platform.machine()}, {cores()} cores; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; medians of {args.repeats} whole batches")
    print()
    print("| configuration | sets/s (median) | runs | vs 1 worker |")
    print("| --- | --- | --- | --- |")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {', '.join(f'{v:.3f}' for v in values)} | {median / base:.2f}x |")
    print()
    print(f"outputs identical across configurations: {'yes' if identical else 'NO'}")
    if not identical:
        raise SystemExit(1)


def _size(path: Path) -> tuple[int, int]:
    from semfuse_rt.engine.io.images import load_image

    height, width = load_image(path).shape[:2]
    return width, height


if __name__ == "__main__":
    main()
