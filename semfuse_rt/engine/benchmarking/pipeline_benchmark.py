"""Latency of what users run: the whole `fuse` pipeline, file to file, per stage, with a warm
Fuser, reported as trtexec reports latency (percentiles over N runs after warm-up), beside
the project's DT-CWT baseline fused from the same files in the same run."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from semfuse_rt.engine.evaluation.baselines import fuse_baseline
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import load_image, save_image
from semfuse_rt.engine.limits.memory import PeakResident

TOTAL = "end to end"
PERCENTILES = (50, 90, 99)
BASELINE_NAME = "DT-CWT baseline"  # what the fuse is timed beside, unless told otherwise


@dataclass
class PipelineReport:
    inputs: list[str]
    size: str  # "K x WxH"
    options: dict
    backend: str | None
    runs: int
    warmup: int
    samples: dict[str, list[float]] = field(default_factory=dict)  # stage -> seconds per run
    baseline: list[float] = field(default_factory=list)  # what ran beside (baseline_name), file to file, seconds
    peak_mib: float = 0.0
    baseline_name: str = BASELINE_NAME
    # The beside run's image against the fuse's, where they should agree (bench --graph):
    # max_levels, share_over_one (of values more than one grey level apart), and their tolerances.
    agreement: dict = field(default_factory=dict)

    def percentiles(self, values: Sequence[float]) -> dict[str, float]:
        return {f"p{p}": float(np.percentile(values, p)) * 1e3 for p in PERCENTILES}

    def summary(self) -> dict:
        """ms per stage (p50/p90/p99), end to end, and what ran beside (the DT-CWT baseline)."""
        table = {stage: self.percentiles(values) for stage, values in self.samples.items()}
        if self.baseline:
            table[self.baseline_name] = self.percentiles(self.baseline)
        return table


def _described(value) -> str:
    """An option as a report shows it: loaded weights by where they came from."""
    return getattr(value, "source", None) or str(value)


def _baseline_run(paths: Sequence[Path], out: Path) -> float:
    started = time.perf_counter()
    images = [load_image(p) for p in paths]
    save_image(out, fuse_baseline(images, "dtcwt"))
    return time.perf_counter() - started


def run_pipeline_benchmark(paths: Sequence[Path], method: str = "max", runs: int = 10, warmup: int = 1,
                           on_run: Callable[[int, int], None] | None = None,
                           beside: Callable[[Sequence[Path], Path], float] = _baseline_run,
                           beside_name: str = BASELINE_NAME, **options) -> PipelineReport:
    """`runs` timed fuses of the files at `paths` after `warmup` untimed ones, alternating
    with `beside(paths, out)` (seconds, file to file; the DT-CWT baseline unless told),
    reported as `beside_name`; on_run(done, total) after each."""
    paths = [Path(p) for p in paths]
    first = load_image(paths[0])
    report = PipelineReport([str(p) for p in paths], f"{len(paths)} x {first.shape[1]}x{first.shape[0]}",
                            {"method": method, **{k: _described(v) for k, v in options.items()}}, None, runs, warmup,
                            baseline_name=beside_name)
    total = warmup + runs
    with tempfile.TemporaryDirectory(prefix="semfuse-bench-") as folder, Fuser(method, **options) as fuser, \
            PeakResident() as peak:
        out = Path(folder) / "fused.png"
        for index in range(total):
            started = time.perf_counter()
            result = fuser.fuse_files(paths, out)
            elapsed = time.perf_counter() - started
            baseline = beside(paths, Path(folder) / "beside.png")
            if index >= warmup:
                for stage, seconds in result.stages.items():
                    report.samples.setdefault(stage, []).append(seconds)
                report.samples.setdefault(TOTAL, []).append(elapsed)
                report.baseline.append(baseline)
            if on_run:
                on_run(index + 1, total)
        report.backend = result.backend
    report.peak_mib = peak.growth / 2**20
    return report


def pipeline_markdown(report: PipelineReport) -> str:
    options = ", ".join(f"{k} {v}" for k, v in report.options.items() if k != "backend")
    lines = [f"Pipeline: {report.size}, {options}, backend {report.backend}; "
             f"{report.runs} runs after {report.warmup} warm-up; "
             f"peak RSS growth {report.peak_mib:.0f} MiB",
             "", "| stage | p50 ms | p90 ms | p99 ms | share of p50 |", "| --- | ---: | ---: | ---: | ---: |"]
    summary = report.summary()
    whole = summary[TOTAL]["p50"]
    for stage, values in summary.items():
        share = f"{values['p50'] / whole:.0%}" if stage not in (TOTAL, report.baseline_name) else ""
        lines.append(f"| {stage} | {values['p50']:.1f} | {values['p90']:.1f} | {values['p99']:.1f} | {share} |")
    if report.baseline:
        lines.append("")
        lines.append(f"End to end over the {report.baseline_name} (p50): "
                     f"{whole / summary[report.baseline_name]['p50']:.2f}x")
    if report.agreement:
        agreement = report.agreement
        lines.append("")
        held = (f"tolerance {agreement['tolerance_levels']} levels, {agreement['tolerance_share']:.2%}"
                if agreement["tolerance_levels"] is not None else "not held to a tolerance")
        lines.append(f"Images, fuse against {report.baseline_name}: at most {agreement['max_levels']} grey levels "
                     f"apart, {agreement['share_over_one']:.4%} of values more than 1 ({held})")
    return "\n".join(lines) + "\n"


def pipeline_chart(report: PipelineReport, path: Path) -> None:
    """One horizontal bar per run-time percentile, split into the stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report.summary()
    stages = [s for s in report.samples if s != TOTAL]
    figure, axis = plt.subplots(figsize=(8, 3.4))
    left = 0.0
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(index) for index in range(tab20.N)]  # a qualitative map: its N listed colours
    for index, stage in enumerate(stages):
        width = summary[stage]["p50"]
        axis.barh([0], [width], left=left, label=stage, color=colours[index % len(colours)])
        left += width
    if report.baseline:
        axis.barh([1], [summary[report.baseline_name]["p50"]], color="black", label=report.baseline_name)
    axis.set_yticks([0, 1] if report.baseline else [0])
    axis.set_yticklabels(["semfuse-rt fuse", report.baseline_name] if report.baseline else ["semfuse-rt fuse"])
    axis.set_xlabel("ms, median per stage")
    axis.set_title(f"Whole fuse, file to file: {report.size}, backend {report.backend}")
    axis.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)
