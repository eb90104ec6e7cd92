"""The whole-pipeline benchmark's mechanics on a tiny pair (timings are never asserted)."""
from semfuse_rt.engine.benchmarking.benchmark import write_reports
from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET, PRESETS
from semfuse_rt.engine.benchmarking.pipeline_benchmark import TOTAL, pipeline_markdown, run_pipeline_benchmark
from semfuse_rt.engine.io.synthetic import synthetic_pair


def test_stages_percentiles_and_reports(tmp_path, random_vgg_weights):
    paths = synthetic_pair(tmp_path / "inputs", size=40)
    seen = []
    report = run_pipeline_benchmark(paths, "max", runs=3, warmup=1, backend="ort", weights=random_vgg_weights,
                                    steps=2, on_run=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and report.backend == "ort" and report.size == "2 x 40x40"
    stages = list(report.samples)
    assert stages[0] == "decode" and stages[-2:] == ["encode", TOTAL]
    assert {"features", "rule", "start", "loop"} <= set(stages)
    assert ("base layer" in stages) == bool(PRESETS[DEFAULT_PRESET].mean_base)
    assert all(len(values) == 3 for values in report.samples.values()) and len(report.baseline) == 3
    summary = report.summary()
    assert all(row["p50"] <= row["p90"] <= row["p99"] for row in summary.values())
    assert "DT-CWT baseline" in summary and "| end to end |" in pipeline_markdown(report)
    written = write_reports([], tmp_path / "out", "semfuse-rt bench", report)
    assert written["pipeline png"].read_bytes()[:4] == b"\x89PNG" and "png" not in written
    assert "| loop |" in written["md"].read_text()
