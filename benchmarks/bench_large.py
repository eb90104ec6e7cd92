"""Time and peak memory of whole `semfuse-rt fuse` runs against image size and stack length,
with enfuse's focus-stacking recipe on the same inputs where enfuse is installed.

    python benchmarks/bench_large.py [--sizes 0.25,1,4,12,24] [--stacks 2,8,32] [--stack-mp 12]
        [--big-stack 16x24] [--one-shot 7] [--work DIR] [--plot benchmarks/images/large-images.png]

Each case is one process, timed with /usr/bin/time-like accounting (wall time, and the peak
resident size of the process from getrusage of its children), so what is measured is what a
user runs, decoding and encoding included. Inputs are synthesised once into --work:
- pairs: lytro-03 A and B (../shared/datasets/multifocus) upscaled (bicubic) to N MP;
- focus stacks: the upscaled A, frame k of K sharp in the k-th of K horizontal bands and
  blurred elsewhere, more the further from its band (sigma up to 6 px), so every region is
  sharp in exactly one frame, as in a focus sweep.
Cases up to 4 MP are repeated three times after a warm-up run and reported as medians; the
larger ones run once (minutes each on the 2-core VM).

First, the one-shot case: the bundled 520 x 520 pair (examples/lytro-01), `semfuse-rt fuse`
against enfuse's recipe and `semfuse-rt --help`, each a median of --one-shot runs after a
warm-up. Children run with Python's bytecode cache allowed whatever this shell says
(PYTHONDONTWRITEBYTECODE), as an installed package has its bytecode (without it each run
compiles the package's modules again: 0.01 s here).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "multifocus"
ENFUSE_FOCUS = ["--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask"]


def size_for(megapixels: float) -> tuple[int, int]:
    """(width, height) at 4:3 with about this many megapixels."""
    height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    return int(round(height * 4 / 3)), height


def source_pair() -> tuple[np.ndarray, np.ndarray]:
    return tuple(cv2.imread(str(SHARED / f"lytro-03-{label}.jpg")) for label in "AB")


def write_pair(work: Path, megapixels: float) -> list[Path]:
    width, height = size_for(megapixels)
    paths = [work / f"pair-{megapixels:g}mp-{label}.tif" for label in "AB"]
    if not all(p.exists() for p in paths):
        for image, path in zip(source_pair(), paths):
            cv2.imwrite(str(path), cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC))
    return paths


def write_stack(work: Path, count: int, megapixels: float) -> list[Path]:
    width, height = size_for(megapixels)
    paths = [work / f"stack-{count}x{megapixels:g}mp-{k:02d}.tif" for k in range(count)]
    if all(p.exists() for p in paths):
        return paths
    sharp = cv2.resize(source_pair()[0], (width, height), interpolation=cv2.INTER_CUBIC)
    blurred = [sharp] + [cv2.GaussianBlur(sharp, (0, 0), sigma) for sigma in (1.5, 3.0, 6.0)]
    band = np.arange(height) * count // height  # the band each row belongs to
    for k, path in enumerate(paths):
        level = np.minimum(np.abs(band - k), len(blurred) - 1)  # blur grows with the distance
        frame = np.empty_like(sharp)
        for index, image in enumerate(blurred):
            rows = level == index
            frame[rows] = image[rows]
        cv2.imwrite(str(path), frame)
    return paths


EXAMPLE_PAIR = [ROOT / "examples" / f"lytro-01-{label}.jpg" for label in "AB"]
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a child process run to completion."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    error = child.stderr.read().decode()
    child.stderr.close()
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{error}")
    return seconds, usage.ru_maxrss * 1024


def fuse_command(inputs: list[Path], output: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "semfuse-rt"), "fuse", *map(str, inputs), "-o", str(output), "-q"]


def enfuse_command(inputs: list[Path], output: Path) -> list[str]:
    return ["enfuse", *ENFUSE_FOCUS, "-o", str(output), *map(str, inputs)]


def one_shot(work: Path, repeats: int) -> list[str]:
    """Lines for the bundled pair's one-shot fuse, enfuse on it and `--help`: medians after a warm-up."""
    script = str(Path(sys.executable).parent / "semfuse-rt")
    commands = [("semfuse-rt fuse -q", fuse_command(EXAMPLE_PAIR, work / "one-shot.png")),
                ("semfuse-rt --help", [script, "--help"])]
    if shutil.which("enfuse"):
        commands.append(("enfuse focus recipe", enfuse_command(EXAMPLE_PAIR, work / "one-shot-enfuse.tif")))
    medians = {}
    for name, command in commands:
        run(command)
        runs = [run(command) for _ in range(repeats)]
        medians[name] = statistics.median(r[0] for r in runs)
        print(f"  one-shot {name}: {medians[name]:.3f} s, {max(r[1] for r in runs) / 2**20:.0f} MiB", flush=True)
    lines = [f"one-shot, 2 x 520 x 520 (examples/lytro-01), median of {repeats}: "
             + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in medians.items())]
    if "enfuse focus recipe" in medians:
        lines.append(f"  fuse / enfuse: {medians['semfuse-rt fuse -q'] / medians['enfuse focus recipe']:.1f}x")
    return lines


def measure(label: str, inputs: list[Path], work: Path, repeats: int) -> dict:
    row = {"case": label, "inputs": len(inputs), "megapixels": size_for_inputs(inputs)}
    tools = [("semfuse", fuse_command)] + ([("enfuse", enfuse_command)] if shutil.which("enfuse") else [])
    for name, command in tools:
        runs = [run(command(inputs, work / f"out-{name}.tif")) for _ in range(repeats)]
        row[f"{name}_s"] = statistics.median(r[0] for r in runs)
        row[f"{name}_rss"] = max(r[1] for r in runs)
        print(f"  {label} {name}: {row[f'{name}_s']:.1f} s, {row[f'{name}_rss'] / 2**30:.2f} GiB", flush=True)
    return row


def size_for_inputs(inputs: list[Path]) -> float:
    height, width = cv2.imread(str(inputs[0]), cv2.IMREAD_UNCHANGED).shape[:2]
    return width * height / 1e6


def table(rows: list[dict], by: str) -> str:
    enfuse = "enfuse_s" in rows[0]
    header = (f"| {by} | MP | semfuse-rt s | s per MP | s per frame | peak RSS |"
              + (" enfuse s | enfuse RSS |" if enfuse else ""))
    lines = [header, "|" + " ---: |" * (header.count("|") - 1)]
    for row in rows:
        frames = row["inputs"]
        cells = [row["case"], f"{row['megapixels']:.2f}", f"{row['semfuse_s']:.1f}",
                 f"{row['semfuse_s'] / row['megapixels']:.2f}", f"{row['semfuse_s'] / frames:.1f}",
                 f"{row['semfuse_rss'] / 2**30:.2f} GiB"]
        if enfuse:
            cells += [f"{row['enfuse_s']:.1f}", f"{row['enfuse_rss'] / 2**30:.2f} GiB"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(sizes: list[dict], stacks: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, style in (("semfuse", "o-"), ("enfuse", "s--")):
        if not (sizes or stacks) or f"{name}_s" not in (sizes or stacks)[0]:
            continue
        mp = [r["megapixels"] for r in sizes]
        axes[0].plot(mp, [r[f"{name}_s"] / r["megapixels"] for r in sizes], style, label=name)
        axes[1].plot(mp, [r[f"{name}_rss"] / 2**30 for r in sizes], style, label=name)
        axes[2].plot([r["inputs"] for r in stacks], [r[f"{name}_s"] for r in stacks], style, label=name)
    axes[0].set(xscale="log", xlabel="megapixels (pair)", ylabel="seconds per megapixel", title="time per MP, pairs")
    axes[1].set(xscale="log", xlabel="megapixels (pair)", ylabel="peak RSS (GiB)", title="peak memory, pairs")
    stack_mp = stacks[0]["megapixels"] if stacks else 0
    axes[2].set(xlabel=f"frames of {stack_mp:.0f} MP", ylabel="seconds", title="time against stack length")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.25,1,4,12,24")
    parser.add_argument("--stacks", default="2,8,32")
    parser.add_argument("--stack-mp", type=float, default=12)
    parser.add_argument("--big-stack", default="16x24", help="COUNTxMP, or empty for none")
    parser.add_argument("--one-shot", type=int, default=7, help="runs of the one-shot case; 0 for none")
    parser.add_argument("--work", type=Path, default=Path("/tmp/semfuse-bench-large"))
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "images" / "large-images.png")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, enfuse: {shutil.which('enfuse') or 'absent'}", flush=True)
    shots = one_shot(args.work, args.one_shot) if args.one_shot > 0 else []
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    warm_up = write_pair(args.work, sizes[0] if sizes else 0.25)
    run(fuse_command(warm_up, args.work / "warm-up.tif"))  # weights, graphs
    pairs = [measure(f"2 x {mp:g} MP", write_pair(args.work, mp), args.work, 3 if mp <= 4 else 1) for mp in sizes]
    stacks = [measure(f"{k} x {args.stack_mp:g} MP", write_stack(args.work, k, args.stack_mp), args.work, 1)
              for k in (int(s) for s in args.stacks.split(",") if s.strip())]
    if args.big_stack:
        count, mp = args.big_stack.split("x")
        stacks_big = [measure(f"{count} x {mp} MP", write_stack(args.work, int(count), float(mp)), args.work, 1)]
    else:
        stacks_big = []
    print("\n" + "\n\n".join([*(["\n".join(shots)] if shots else []),
                               *(table(rows, by) for rows, by in ((pairs, "pair"), (stacks + stacks_big, "stack"))
                                 if rows)]))
    if pairs or stacks:
        plot(pairs, stacks, args.plot)
        print(f"\nplot: {args.plot}")
    print(f"children's peak RSS overall {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
