"""The search behind the `blend` default's weights (issue 28): candidates scored on the
shared benchmarks' halves, against the benchmarks' own peers.

    python benchmarks/blend_search.py ../shared/benchmarks --half tune --candidates start,whole,mertens
    python benchmarks/blend_search.py ../shared/benchmarks --half check --candidates start,exposure,mertens

Halves are fixed in advance and never chosen by score: a set is in the `tune` half when the
first hex digit of sha1("BENCHMARK/CATEGORY/SET") is even, else in `check` (`all`: both).
Every candidate is the start image alone (`start`, `whole`: engine/start/pyramid_blend.py) or a
whole fuse (`default`, `blend-steps`, `exposure`), rounded to 8 bits as `semfuse-rt fuse`
writes it. The other candidates of RESULTS.md's "Exposure stacks" search were options of
agreement_blend that were not kept. Peers:

- MEFB: OpenCV's Mertens and enfuse (exposure recipe), fused in the same run;
- MFIFB: enfuse's focus recipe;
- VIFB calibration: the 25 published methods' fused images (`fused/SET_METHOD.jpg`);
- RoadScene: the `average` and DT-CWT baselines. Its visible images are larger than the
  infrared ones and differ in aspect: each pair is registered by resizing the visible image
  to the infrared one's size (area averaging), which lines the scenes up (checked by eye
  on overlays); RoadScene's own tools do the same.

Per benchmark it prints each method's mean of every metric (VIFB's 13, MEF-SSIM, Q^AB/F
mirror, Q_Y), and the mean rank over VIFB's 13 metrics among all methods scored there.
--json writes every per-image value.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

BENCHMARKS = ("mefb", "mfifb", "vifb-calibration", "roadscene", "datasets-medical", "datasets-infrared_visible",
              "datasets-multiexposure", "datasets-multifocus")


def half_of(key: str) -> str:
    return "tune" if int(hashlib.sha1(key.encode()).hexdigest()[0], 16) % 2 == 0 else "check"


def load_set(benchmark: str, sources) -> list[np.ndarray]:
    from semfuse_rt.engine.io.images import load_image

    images = [load_image(path) for path in sources]
    if benchmark == "roadscene":
        height, width = images[0].shape[:2]  # the infrared image
        images = [images[0]] + [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                                for image in images[1:]]
    return images


def _start(**options) -> Callable:
    def fuse(images):
        import torch

        from semfuse_rt.engine.start.pyramid_blend import agreement_blend
        from semfuse_rt.engine.io.sources import finish, prepare

        sources = prepare(images)
        start = agreement_blend(torch.from_numpy(sources.pixels), **options)
        return finish(start[0].numpy(), sources)
    return fuse


def _fuser(**options) -> Callable:
    def fuse(images):
        from semfuse_rt.engine.api import fuse as api_fuse

        return api_fuse(images, **options)
    return fuse


def _baseline(name: str, **options) -> Callable:
    def fuse(images):
        from semfuse_rt.engine.evaluation.baselines import fuse_baseline

        return fuse_baseline(images, name, **options)
    return fuse


CANDIDATES: dict[str, Callable] = {
    "start": _start(),
    "whole": _start(coarsest=3),  # the `exposure` start
    "whole-1px": _start(coarsest=1),  # its pyramid down to the 1-2 px band, as before 12-07
    "default": _fuser(method="max"),
    "blend-steps": _fuser(method="max", preset="blend-steps"),
    "exposure": _fuser(method="max", preset="exposure"),
    "mertens": _baseline("mertens"),
    "enfuse": _baseline("enfuse"),
    "enfuse-focus": _baseline("enfuse", recipe="focus"),
    "average": _baseline("average"),
    "dtcwt": _baseline("dtcwt"),
}


def scores(sources: list[np.ndarray], fused: np.ndarray) -> dict[str, float]:
    from semfuse_rt.engine.metrics.mef_ssim import mef_ssim
    from semfuse_rt.engine.metrics.metrics import qabf, qy, to_luma_255
    from semfuse_rt.engine.metrics.vifb_metrics import vifb_metrics

    values = {f"vifb:{k}": v for k, v in vifb_metrics(sources, fused).items()}
    lumas = [to_luma_255(s) for s in sources]
    values.update({"MEF-SSIM": mef_ssim(sources, fused), "Qabf": qabf(lumas, to_luma_255(fused)),
                   "Qy": qy(lumas, to_luma_255(fused))})
    return values


def run_one(job) -> list[tuple[str, str, str, dict, float]]:
    benchmark, key, sources, candidates, fused_files = job
    import torch

    torch.set_num_threads(1)
    images = load_set(benchmark, sources)
    rows = []
    for name in candidates:
        began = time.perf_counter()
        fused = CANDIDATES[name](images)
        seconds = time.perf_counter() - began
        rows.append((benchmark, key, name, scores(images, fused), seconds))
    for method, path in fused_files:
        from semfuse_rt.engine.io.images import load_image

        rows.append((benchmark, key, method, scores(images, load_image(path)), 0.0))
    return rows


def jobs(root: Path, half: str, candidates: list[str], benchmarks: list[str]):
    from semfuse_rt.engine.evaluation.datasets import find_sets

    for benchmark in benchmarks:
        found = (find_sets(root.parent / "datasets", categories=[benchmark.split("-", 1)[1]])
                 if benchmark.startswith("datasets-") else find_sets(root / benchmark))
        for fusion_set in found.sets:
            key = f"{benchmark}/{fusion_set.category}/{fusion_set.name}"
            if half != "all" and half_of(key) != half:
                continue
            names = [c for c in candidates if _applies(c, benchmark)]
            fused = []
            if benchmark == "vifb-calibration":
                folder = root / benchmark / "fused"
                fused = [(p.stem[len(fusion_set.name) + 1:], p) for p in sorted(folder.glob(f"{fusion_set.name}_*"))]
            yield benchmark, key, fusion_set.sources, names, fused


def _applies(candidate: str, benchmark: str) -> bool:
    peers = {"mertens": ("mefb",), "enfuse": ("mefb",), "enfuse-focus": ("mfifb",),
             "average": ("roadscene",), "dtcwt": ("roadscene",)}
    return benchmark in peers.get(candidate, BENCHMARKS)


def mean_ranks(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Methods' mean rank over VIFB's 13 metrics (ties share their mean rank)."""
    from semfuse_rt.engine.evaluation.method_ranking import average_ranks
    from semfuse_rt.engine.metrics.vifb_metrics import VIFB_METRICS

    ranks: dict[str, list[float]] = {m: [] for m in table}
    for metric, higher in VIFB_METRICS:
        for method, rank in average_ranks({m: v[f"vifb:{metric}"] for m, v in table.items()}, higher).items():
            ranks[method].append(rank)
    return {m: float(np.mean(r)) for m, r in ranks.items()}


def report(rows) -> str:
    lines = []
    for benchmark in BENCHMARKS:
        mine = [r for r in rows if r[0] == benchmark]
        if not mine:
            continue
        methods = list(dict.fromkeys(r[2] for r in mine))
        table = {m: {k: float(np.nanmean([r[3][k] for r in mine if r[2] == m])) for k in mine[0][3]}
                 for m in methods}
        ranks = mean_ranks(table)
        sets = len({r[1] for r in mine})
        lines.append(f"\n## {benchmark}: {sets} sets")
        lines.append("| method | VIFB mean rank | MEF-SSIM | Qabf | Qy | vifb:Qcb | vifb:Qcv | vifb:SSIM | vifb:MI "
                     "| vifb:CE | vifb:EN | vifb:SD | seconds |")
        lines.append("|" + " --- |" * 13)
        for m in sorted(methods, key=lambda m: ranks[m]):
            t = table[m]
            secs = np.mean([r[4] for r in mine if r[2] == m])
            lines.append(f"| {m} | {ranks[m]:.2f} | {t['MEF-SSIM']:.4f} | {t['Qabf']:.4f} | {t['Qy']:.4f} | "
                         f"{t['vifb:Qcb']:.4f} | {t['vifb:Qcv']:.1f} | {t['vifb:SSIM']:.4f} | {t['vifb:MI']:.3f} | "
                         f"{t['vifb:CE']:.3f} | {t['vifb:EN']:.3f} | {t['vifb:SD']:.2f} | {secs:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--half", choices=("tune", "check", "all"), default="tune")
    parser.add_argument("--candidates", default="start,default")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    candidates = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate {unknown[0]!r}; use {', '.join(CANDIDATES)}")
    work = list(jobs(args.root, args.half, candidates, args.benchmarks.split(",")))
    with ProcessPoolExecutor(args.workers) as pool:
        rows = [row for result in pool.map(run_one, work) for row in result]
    if args.json:
        args.json.write_text(json.dumps(rows, default=str))
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
