"""The benchmark's mechanics on a tiny problem (timings themselves are never asserted)."""
import json
import time

from semfuse_rt.engine.benchmarking.benchmark import BASELINE, run_benchmark, write_reports
from semfuse_rt.engine.limits.memory import PeakResident, resident_bytes


def test_rows_reports_and_chart(tmp_path, vgg_weights):
    rows = run_benchmark(vgg_weights, ["ort"], ["relu1_1"], [32], steps=12, repeats=1, warmup=0)
    assert [r.backend for r in rows] == [BASELINE, "ort"]
    baseline = rows[0]
    assert baseline.step_speedup == 1.0 and baseline.fuse_speedup == 1.0
    for row in rows:
        assert row.step_ms > 0 and row.fuse_ms > 0 and row.size == 32 and row.loop_growth_mib >= 0
        assert row.fuse_step_ms == row.fuse_ms / 12
    paths = write_reports(rows, tmp_path, "semfuse-rt bench --sizes 32")
    payload = json.loads(paths["json"].read_text())
    assert payload["command"] == "semfuse-rt bench --sizes 32" and len(payload["rows"]) == 2
    assert "date" in payload["machine"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 32^2 | relu1_1 | ort |" in paths["md"].read_text()


def test_peak_resident_sees_an_allocation():
    import mmap

    # A fresh anonymous mapping: malloc could hand back pages an earlier test left resident.
    with PeakResident() as peak:
        block = mmap.mmap(-1, 64 * 2**20)
        for offset in range(0, len(block), 4096):  # touch every page
            block[offset] = 1
        time.sleep(0.05)
    assert resident_bytes() > 0
    assert peak.growth >= 32 * 2**20
    block.close()
