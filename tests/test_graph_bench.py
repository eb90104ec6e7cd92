"""`semfuse-rt bench --graph FILE.onnx`: an exported graph timed beside the package's fuse of
the same preset (issue 30)."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_main


@pytest.fixture(scope="module")
def blend_graph(tmp_path_factory):
    """The default preset (a pyramid blend, no network) for pairs whose shorter side is 64 to 127."""
    from semfuse_rt.engine.deploy.whole_fuse_export import export_fuse

    return export_fuse(tmp_path_factory.mktemp("graph") / "blend.onnx", size="64x64", show_progress=False)


def test_bench_graph_times_the_graph_beside_the_fuse_of_its_preset(monkeypatch, capsys, tmp_path, blend_graph):
    from semfuse_rt.engine.benchmarking.graph_benchmark import GRAPH_NAME, TOLERANCE_LEVELS

    graph_bytes = blend_graph.path.read_bytes()
    out = tmp_path / "bench"
    code, stdout, err = run_main(monkeypatch, capsys, "bench", "--graph", blend_graph.path, "--runs", 3,
                                 "--warmup", 1, "--out", out, "-q")
    assert code in (0, None), err
    assert f"end to end p50, fuse / {GRAPH_NAME}: " in stdout and "grey levels apart (tolerance 2)" in stdout
    payload = json.loads((out / "bench.json").read_text())
    pipeline = payload["pipeline"]
    assert payload["rows"] == []  # no loop timing
    # The synthetic pair, at the side the graph takes nearest 520; the fuse as the manifest says.
    assert pipeline["size"] == "2 x 127x127" and pipeline["baseline_name"] == GRAPH_NAME
    assert pipeline["options"]["preset"] == "blend" and pipeline["options"]["init"] == "pyramid-blend"
    assert pipeline["options"]["steps"] == "0" and pipeline["runs"] == 3  # options as the report shows them
    assert len(pipeline["baseline"]) == 3 and len(pipeline["samples"]["end to end"]) == 3
    for row in ("end to end", GRAPH_NAME):
        values = pipeline["ms"][row]
        assert set(values) == {"p50", "p90", "p99"} and 0 < values["p50"] <= values["p90"] <= values["p99"]
    agreement = pipeline["agreement"]
    assert 0 <= agreement["max_levels"] <= TOLERANCE_LEVELS and agreement["share_over_one"] <= 1e-4
    markdown = (out / "bench.md").read_text()
    assert f"| {GRAPH_NAME} |" in markdown and f"End to end over the {GRAPH_NAME} (p50): " in markdown
    assert f"Images, fuse against {GRAPH_NAME}: at most {agreement['max_levels']} grey levels apart" in markdown
    assert blend_graph.path.read_bytes() == graph_bytes


def _write(path, image):
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("args, fragment", [
    (["--method", "max"], "--method does not apply with --graph: it times the graph beside the fuse its manifest"),
    (["--preset", "fast"], "--preset does not apply with --graph"),
    (["--sizes", "64"], "--sizes does not apply with --graph"),
    (["--backends", "torch"], "--backends does not apply with --graph"),
    (["--steps", "20"], "--steps does not apply with --graph"),
    (["--no-pipeline"], "--no-pipeline does not apply with --graph"),
    (["--weights", "{tmp}/w.pt"], "--weights does not apply: {graph} (preset blend (max at relu1_1, pyramid-blend "
                                  "start, 0 steps)) holds no network"),
    (["{tmp}/a.png", "{tmp}/b.png", "{tmp}/c.png"], "--graph {graph} fuses 2 images; got 3"),
    (["{tmp}/small_a.png", "{tmp}/small_b.png"], "--graph {graph} takes images whose shorter side is 64 to 127 "
                                                 "pixels; these have 40 (export one for them"),
    (["{tmp}/a.png", "{tmp}/grey.png"], "grey and colour inputs mixed: the exported graph fuses all-grey or"),
    (["{tmp}/a.png", "{tmp}/tall.png"], "the inputs differ in size"),
    (["--backend", "nonesuch"], "nonesuch"),  # checked before the synthetic pair is written
])
def test_bad_graph_options_are_one_line_errors_and_leave_nothing(monkeypatch, capsys, tmp_path, blend_graph, args,
                                                                  fragment, rng):
    (tmp_path / "w.pt").write_bytes(b"weights")
    for name in "abc":
        _write(tmp_path / f"{name}.png", rng.integers(0, 256, (80, 90, 3), dtype=np.uint8))
    _write(tmp_path / "tall.png", rng.integers(0, 256, (90, 80, 3), dtype=np.uint8))
    _write(tmp_path / "grey.png", rng.integers(0, 256, (80, 90), dtype=np.uint8))
    for name in ("small_a", "small_b"):
        _write(tmp_path / f"{name}.png", rng.integers(0, 256, (40, 90, 3), dtype=np.uint8))
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    code, _, err = run_main(monkeypatch, capsys, "bench", "--graph", blend_graph.path, "--out", tmp_path / "bench",
                            "-q", *(a.format(tmp=tmp_path) for a in args))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    expected = fragment.format(tmp=tmp_path, graph=blend_graph.path)
    assert lines[0].startswith("semfuse-rt: error: ") and expected in lines[0], lines[0]
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before  # no report folder, inputs intact


def test_a_graph_without_its_manifest_or_not_the_one_it_records_is_refused(monkeypatch, capsys, tmp_path,
                                                                           blend_graph, rng):
    """A manifest says what the fuse beside the graph is: it must be there, be a manifest, and
    record this very file; and a graph whose images differ from the fuse's is an error."""
    cases = []
    alone = shutil.copy(blend_graph.path, tmp_path / "alone.onnx")
    cases.append((alone, f"--graph {alone}: no manifest alone.onnx.json beside it"))
    renamed = shutil.copy(blend_graph.path, tmp_path / "renamed.onnx")
    shutil.copy(blend_graph.manifest_path, tmp_path / "renamed.onnx.json")
    cases.append((renamed, "its sha256 is not the one renamed.onnx.json records for renamed.onnx"))
    other = shutil.copy(blend_graph.path, tmp_path / "other.onnx")
    (tmp_path / "other.onnx.json").write_text('{"preset": "blend"}')
    cases.append((other, "other.onnx.json is not a manifest of semfuse-rt export (no method, options,"))
    cases.append((tmp_path / "missing.onnx", "no such file"))
    # The manifest says another start than the graph holds: the fuse beside it is not the graph's.
    (tmp_path / "changed").mkdir()
    changed = shutil.copy(blend_graph.path, tmp_path / "changed" / "blend.onnx")
    manifest = json.loads(blend_graph.manifest_path.read_text())
    manifest["options"]["init"] = "mean"
    (tmp_path / "changed" / "blend.onnx.json").write_text(json.dumps(manifest))
    cases.append((changed, "its image differs from this package's fuse of preset blend (max at relu1_1, mean start"))
    pair = [_write(tmp_path / f"{name}.png", rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)) for name in "ab"]
    for graph, fragment in cases:
        before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
        code, _, err = run_main(monkeypatch, capsys, "bench", "--graph", graph, *pair, "--runs", 1,
                                "--out", tmp_path / "bench", "-q")
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0], err
        assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
        assert not (tmp_path / "bench").exists()


def test_a_graph_with_steps_is_timed_with_the_weights_it_was_exported_with(monkeypatch, capsys, tmp_path, rng):
    """A mean start, 2 steps and a base layer: the network's graph, with the fuse beside it on
    the same weights; other weights are refused before any work."""
    from semfuse_rt.engine.deploy.whole_fuse_export import export_fuse
    from semfuse_rt.export.networks.weights import _save_cache, random_vgg19

    weights = [tmp_path / f"weights{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(weights):
        _save_cache(path, random_vgg19(seed))
    graph = export_fuse(tmp_path / "steps.onnx", preset="paper", steps=2, mean_base=4.0, weights=weights[0],
                        show_progress=False)
    pair = [_write(tmp_path / f"{name}.png", rng.integers(0, 256, (48, 40), dtype=np.uint8)) for name in "ab"]
    code, _, err = run_main(monkeypatch, capsys, "bench", "--graph", graph.path, *pair, "--weights", weights[1],
                            "--out", tmp_path / "refused", "-q")
    assert code == 2 and err.count("\n") == 1 and "was exported with the weights of sha256" in err, err
    assert f"not weights {weights[1]}" in err and not (tmp_path / "refused").exists()
    code, stdout, err = run_main(monkeypatch, capsys, "bench", "--graph", graph.path, *pair, "--weights", weights[0],
                                 "--runs", 2, "--warmup", 0, "--out", tmp_path / "bench", "-q")
    assert code in (0, None), err
    pipeline = json.loads((tmp_path / "bench" / "bench.json").read_text())["pipeline"]
    assert pipeline["size"] == "2 x 40x48" and pipeline["options"]["steps"] == "2"
    assert pipeline["options"]["weights"] == graph.manifest["weights_source"]
    assert pipeline["agreement"]["max_levels"] <= 1  # no blend start: within one level everywhere
