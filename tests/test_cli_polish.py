"""Small CLI defects a new user meets first: the bare command, --version and `python -m`,
help that reads right, eval on a flat folder, tables that survive a pipe, the fuse-video
summary and eval's side-by-side pictures."""
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from semfuse_rt.engine.evaluation.baselines import BASELINES
from semfuse_rt.engine.cli.application import COMMAND_MODULES
from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES
from semfuse_rt.engine.io.images import save_image
from semfuse_rt.engine.io.side_by_side import VIEW
from conftest import run_main

VERSION_LINE = f"semfuse-rt {metadata.version('semfuse-rt')}"
COMMANDS = ("fuse", "fuse-video", "cam", "weights", "build", "export", "bench", "eval", "score", "fuse-batch")


def no_leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]


@pytest.fixture
def weights_file(tmp_path, random_vgg_weights):
    from semfuse_rt.export.networks.weights import _save_cache

    path = tmp_path / "weights.pt"
    _save_cache(path, random_vgg_weights)
    return path


# --------------------------------------------------------------------------- bare, --version, -m

def test_bare_command_prints_the_help_and_no_error(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys)
    assert code in (0, None)
    assert err == ""
    assert "Usage: semfuse-rt [OPTIONS] COMMAND" in out
    assert all(command in out for command in COMMANDS)


def test_every_command_is_listed_once_in_help_order(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "--help")
    assert code in (0, None)
    positions = [out.index(f" {command} ") for command in COMMANDS]
    assert positions == sorted(positions) and len(COMMAND_MODULES) == len(COMMANDS)


def test_version_without_torch_or_onnxruntime():
    script = ("import sys\n"
              "sys.argv = ['semfuse-rt', '--version']\n"
              "from semfuse_rt.engine.cli import main\n"
              "try:\n"
              "    main()\n"
              "except SystemExit as done:\n"
              "    print(done.code, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [VERSION_LINE, "0 False False"]


def test_version_through_the_console_script_and_python_dash_m():
    script = shutil.which("semfuse-rt", path=os.path.dirname(sys.executable)) or shutil.which("semfuse-rt")
    assert script, "the semfuse-rt console script is not installed"
    for command in ([script, "--version"], [sys.executable, "-m", "semfuse_rt", "--version"]):
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert (run.returncode, run.stdout, run.stderr) == (0, VERSION_LINE + "\n", ""), command


def test_version_option_of_the_app_says_the_same():
    from typer.testing import CliRunner

    from semfuse_rt.engine.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, VERSION_LINE + "\n")


def test_python_dash_m_runs_the_command_line(tmp_path):
    image = save_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    out = tmp_path / "out.png"
    run = subprocess.run([sys.executable, "-m", "semfuse_rt", "fuse", str(image), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("semfuse-rt: error: ") and "at least 2" in lines[0]
    assert not out.exists()


# --------------------------------------------------------------------------- help text

@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_bool_placeholder_and_a_readable_usage(monkeypatch, capsys, command):
    code, out, err = run_main(monkeypatch, capsys, command, "--help")
    assert code in (0, None) and err == ""
    assert "<bool>" not in out
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage
    assert "(the  extra)" not in out and "\\[" not in out  # markup eaten, or an escape showing


def test_usage_lines_name_the_arguments(monkeypatch, capsys):
    expected = {"fuse": "fuse [OPTIONS] A B [C ...]", "fuse-video": "fuse-video [OPTIONS] A B [C ...]",
                "cam": "cam [OPTIONS] IMAGE", "bench": "bench [OPTIONS] [INPUTS...]",
                "eval": "eval [OPTIONS] DIR|SETS.csv", "fuse-batch": "fuse-batch [OPTIONS] DIR|SETS.csv"}
    for command, usage in expected.items():
        _, out, _ = run_main(monkeypatch, capsys, command, "--help")
        assert f"Usage: semfuse-rt {usage}" in out, out.splitlines()[:3]


def test_a_missing_argument_is_named_as_the_usage_line_names_it(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "fuse", "-o", tmp_path / "out.png")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and out == ""
    assert "Missing argument 'A B [C ...]'" in lines[0]


def test_eval_help_lists_every_baseline_and_the_judges_extra(monkeypatch, capsys):
    _, out, _ = run_main(monkeypatch, capsys, "eval", "--help")
    for name in (*BASELINES, *IMAGE_BASELINES):
        assert f"\n   {name}" in out, name
    assert "mertens: contrast, saturation, exposure" in out and "enfuse: recipe" in out
    assert "[judges]" in out


# --------------------------------------------------------------------------- eval

def write_pair(folder: Path, stem: str, rng, shape=(40, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in ("A", "B"):
        path = folder / f"{stem}-{label}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(path)
    return paths


def test_eval_on_a_flat_folder_names_the_category_after_the_folder(monkeypatch, capsys, tmp_path, rng):
    flat = tmp_path / "pairs"
    write_pair(flat, "scene", rng)
    out = tmp_path / "out"
    monkeypatch.chdir(flat)
    code, stdout, err = run_main(monkeypatch, capsys, "eval", ".", "--methods", "average", "--no-retention",
                                 "-q", "--out", out)
    assert code in (0, None), err
    assert "pairs (1 set)" in stdout
    assert (out / "grid-pairs.png").is_file() and not (out / "grid-.png").exists()
    assert (out / "side-by-side" / "pairs" / "scene.png").is_file()


def test_eval_tables_keep_long_method_labels_when_piped(monkeypatch, capsys, tmp_path, rng):
    write_pair(tmp_path / "sets" / "grey", "scene", rng)
    label = "dwt@levels=2@wavelet=haar@mode=periodization"
    code, stdout, err = run_main(monkeypatch, capsys, "eval", tmp_path / "sets", "--methods", f"average,{label}",
                                 "--no-retention", "--no-grids", "-q", "--out", tmp_path / "out")
    assert code in (0, None), err
    assert label in stdout and "…" not in stdout


def test_eval_side_by_side_shows_each_set_at_its_own_size(monkeypatch, capsys, tmp_path, rng):
    sources = write_pair(tmp_path / "sets" / "small", "scene", rng, (40, 48))
    write_pair(tmp_path / "sets" / "large", "wide", rng, (300, 2 * VIEW))
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "eval", tmp_path / "sets", "--methods", "average,dwt",
                                 "--no-retention", "-q", "--out", out)
    assert code in (0, None), err
    assert f"wrote 2 side-by-side pictures (inputs, then each method) under {out / 'side-by-side'}/" in stdout
    assert no_leftovers(out) == []

    with Image.open(out / "side-by-side" / "small" / "scene.png") as picture:
        small = np.asarray(picture.convert("RGB"))
    # Four panels (two inputs, two methods), each in a cell at least 160 wide for its label.
    assert small.shape[1] == 2 * 8 + 4 * 160 + 3 * 8 and small.shape[0] > 40
    source = cv2.imread(str(sources[0]), cv2.IMREAD_GRAYSCALE)
    # The first input appears pixel for pixel, centred in its cell under the label.
    left = 8 + (160 - 48) // 2
    found = [top for top in range(small.shape[0] - 40) if np.array_equal(small[top:top + 40, left:left + 48, 0], source)]
    assert len(found) == 1

    with Image.open(out / "side-by-side" / "large" / "wide.png") as picture:
        # Shown at half size, VIEW pixels wide: four cells of VIEW.
        assert picture.size[0] == 2 * 8 + 4 * VIEW + 3 * 8


def test_eval_without_grids_draws_no_pictures(monkeypatch, capsys, tmp_path, rng):
    write_pair(tmp_path / "sets" / "grey", "scene", rng)
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "eval", tmp_path / "sets", "--methods", "average",
                                 "--no-retention", "--no-grids", "-q", "--out", out)
    assert code in (0, None), err
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "scores.csv"]
    assert "side-by-side" not in stdout


def test_eval_out_that_is_a_file_is_refused_before_any_work(monkeypatch, capsys, tmp_path, rng):
    write_pair(tmp_path / "sets" / "grey", "scene", rng)
    out = tmp_path / "report"
    out.write_text("keep me")
    code, stdout, err = run_main(monkeypatch, capsys, "eval", tmp_path / "sets", "--methods", "average",
                                 "--no-retention", "-q", "--out", out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and stdout == ""
    assert str(out) in lines[0] and "not a folder" in lines[0] and "--out" in lines[0]
    assert out.read_text() == "keep me"


# --------------------------------------------------------------------------- other tables

def test_weights_table_keeps_the_whole_path_when_piped(monkeypatch, capsys, tmp_path):
    from semfuse_rt.cache import CACHE_ENV

    cache = tmp_path / ("a-cache-folder-with-a-long-name-" * 3).rstrip("-")
    monkeypatch.setenv(CACHE_ENV, str(cache))
    code, stdout, err = run_main(monkeypatch, capsys, "weights")
    assert code in (0, None), err
    assert str(cache / "weights") in stdout and "…" not in stdout


def test_bench_loop_table_keeps_the_layer_names_when_piped(monkeypatch, capsys, tmp_path, weights_file):
    code, stdout, err = run_main(monkeypatch, capsys, "bench", "--no-pipeline", "--backends", "torch",
                                 "--layers", "relu1_1", "--sizes", "32", "--steps", "11", "--repeats", "1",
                                 "--warmup", "0", "--weights", weights_file, "-q", "--out", tmp_path / "bench")
    assert code in (0, None), err
    assert "relu1_1" in stdout and "…" not in stdout


# --------------------------------------------------------------------------- fuse-video

def test_fuse_video_summary_names_the_preset(monkeypatch, capsys, tmp_path, rng, weights_file):
    streams = []
    for name in ("ir", "vis"):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(3):
            save_image(folder / f"frame{index}.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
        streams.append(folder)
    out = tmp_path / "fused"
    code, stdout, err = run_main(monkeypatch, capsys, "fuse-video", *streams, "-o", out, "--weights", weights_file,
                                 "--backend", "torch", "--preset", "fast", "--workers", "1", "-q")
    assert code in (0, None), err
    summary = stdout.strip().splitlines()
    assert len(summary) == 1 and "fused 3 frames of 2 streams with max (preset fast) on torch" in summary[0]


def test_fuse_report_table_keeps_the_input_names_when_piped(monkeypatch, capsys, tmp_path, rng):
    names = [f"{band}-band-frame-of-the-harbour-at-dusk-from-the-north-pier.png" for band in ("infrared", "visible")]
    paths = [save_image(tmp_path / name, rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)) for name in names]
    code, stdout, err = run_main(monkeypatch, capsys, "fuse", *paths, "-o", tmp_path / "fused.png", "-m", "cam",
                                 "--report", "-q")
    assert code in (0, None), err
    assert all(name in stdout for name in names) and "…" not in stdout
