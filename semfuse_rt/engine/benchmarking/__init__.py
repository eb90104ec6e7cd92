"""Timings: the fuse by stage, the pipeline end to end beside a baseline, the exported graph.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.benchmarking.bench_options import (
        DEFAULT_LOOP_STEPS, DEFAULT_REPEATS, DEFAULT_RUNS, DEFAULT_SIZES, check_bench_options,
    )
    from semfuse_rt.engine.benchmarking.benchmark import planned_measurements, run_benchmark, write_reports
    from semfuse_rt.engine.benchmarking.graph_benchmark import GraphBench, summary_line
    from semfuse_rt.engine.benchmarking.pipeline_benchmark import TOTAL, run_pipeline_benchmark

__all__ = [
    "DEFAULT_LOOP_STEPS", "DEFAULT_REPEATS", "DEFAULT_RUNS", "DEFAULT_SIZES", "check_bench_options",
    "planned_measurements", "run_benchmark", "write_reports", "GraphBench", "summary_line", "TOTAL",
    "run_pipeline_benchmark"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "DEFAULT_LOOP_STEPS": "bench_options",
    "DEFAULT_REPEATS": "bench_options",
    "DEFAULT_RUNS": "bench_options",
    "DEFAULT_SIZES": "bench_options",
    "check_bench_options": "bench_options",
    "planned_measurements": "benchmark",
    "run_benchmark": "benchmark",
    "write_reports": "benchmark",
    "GraphBench": "graph_benchmark",
    "summary_line": "graph_benchmark",
    "TOTAL": "pipeline_benchmark",
    "run_pipeline_benchmark": "pipeline_benchmark",
})
