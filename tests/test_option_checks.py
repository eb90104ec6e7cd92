"""Options checked up front: an option the method does not use, a misspelt keyword, sizes,
budgets, opsets and worker counts out of range are one line and exit 2 before any work,
with the inputs intact and nothing left behind; a fuse that runs out of memory says what it
needed; the API reports progress through a callback or the "semfuse_rt" logger."""
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import semfuse_rt
from semfuse_rt.engine.cli import main
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import save_image
from semfuse_rt.errors import SemfuseError

HUGE = "9" * 400


@pytest.fixture
def pair(rng):
    return [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(2)]


@pytest.fixture
def work(tmp_path, pair):
    """A folder with an input pair (a.png, b.png), a set folder, two frame folders and a
    weights file; tests run in it, so that a command's default output folders land there."""
    from semfuse_rt.export.networks.weights import _save_cache, random_vgg19

    for name, image in zip("ab", pair):
        save_image(tmp_path / f"{name}.png", image)
    category = tmp_path / "sets" / "cat"
    category.mkdir(parents=True)
    for name, image in zip("AB", pair):
        save_image(category / f"x-{name}.png", image)
    for stream, image in zip(("s1", "s2"), pair):
        (tmp_path / stream).mkdir()
        for index in range(2):
            save_image(tmp_path / stream / f"frame{index}.png", image)
    _save_cache(tmp_path / "w.pt", random_vgg19())
    return tmp_path


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def run_cli(monkeypatch, capsys, folder: Path, *args):
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def assert_refused(monkeypatch, capsys, folder: Path, args, *fragments):
    """Exit 2, one line on stderr holding every fragment, nothing written, inputs intact."""
    before = snapshot(folder)
    code, out, err = run_cli(monkeypatch, capsys, folder, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("semfuse-rt: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert snapshot(folder) == before
    return lines[0]


# ------------------------------------------------------------------ options a method does not use

FUSE = ("fuse", "a.png", "b.png", "-o", "out.png")


@pytest.mark.parametrize("args, message", [
    (("--window", "7"), "--window applies to majority and cam-majority only, not max"),
    (("--classes", "3"), "--classes applies to cam, cam-max and cam-majority only, not max"),
    (("--save-cams", "cams"), "--save-cams applies to cam, cam-max and cam-majority only, not max"),
    (("--cam-weights", "w.pt"), "--cam-weights applies to cam, cam-max and cam-majority only, not max"),
    (("-m", "max", "--window", "5"), "--window applies to majority and cam-majority only, not max"),
    (("-m", "cam-max", "--window", "3"), "--window applies to majority and cam-majority only, not cam-max"),
    (("-m", "cam", "--steps", "3"), "--steps applies to max, majority, cam-max and cam-majority only, not cam: "
                                    "it weights the pixels directly"),
    (("-m", "cam", "--semantic-steps", "2"), "--semantic-steps applies to max, majority, cam-max and "
                                             "cam-majority only, not cam"),
    (("-m", "cam", "--preset", "paper"), "--preset applies to"),
    (("-m", "cam", "--backend", "ort"), "--backend applies to"),
    (("-m", "cam", "--layer", "relu2_1"), "--layer applies to"),
    (("-m", "cam", "--weights", "w.pt"), "--weights applies to"),
    (("-m", "cam", "--tile", "128"), "--tile applies to"),
])
def test_fuse_refuses_an_option_the_method_does_not_use(monkeypatch, capsys, work, args, message):
    assert_refused(monkeypatch, capsys, work, (*FUSE, *args), message)


def test_an_option_that_applies_runs(monkeypatch, capsys, work):
    code, out, err = run_cli(monkeypatch, capsys, work, *FUSE, "-m", "majority", "--window", "3", "--steps", "1",
                             "--weights", "w.pt", "--backend", "ort", "-q")
    assert code == 0 and err == "" and "majority" in out and (work / "out.png").is_file()


def test_fuse_batch_and_fuse_video_apply_the_same_rule(monkeypatch, capsys, work):
    assert_refused(monkeypatch, capsys, work, ("fuse-batch", "sets", "-o", "outdir", "--window", "7"),
                   "--window applies to majority and cam-majority only, not max")
    assert_refused(monkeypatch, capsys, work, ("fuse-video", "s1", "s2", "-o", "video.mp4", "--classes", "3"),
                   "--classes applies to cam, cam-max and cam-majority only, not max")
    assert_refused(monkeypatch, capsys, work, ("fuse-video", "s1", "s2", "-o", "video.mp4", "-m", "cam",
                                               "--steps", "3"), "--steps applies to", "not cam")


def test_the_api_refuses_an_option_the_method_does_not_use(pair):
    with pytest.raises(SemfuseError, match="^--window applies to majority and cam-majority only, not max$"):
        Fuser("max", window=7)
    with pytest.raises(SemfuseError, match="^--classes applies to cam, cam-max and cam-majority only, not max$"):
        semfuse_rt.fuse(pair, "max", classes=3)
    Fuser("majority", window=7)
    Fuser("max", window=None, classes=None)  # None is "not given"


def test_eval_flags_go_to_the_variants_that_use_them(monkeypatch, capsys, work):
    from semfuse_rt.engine.evaluation.evaluation import check_variants, parse_methods

    check_variants(parse_methods("dwt,max,majority"), {"window": 7})  # majority uses it
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "dwt,max", "--window", "7", "-o", "ev"),
                   "--window applies to majority and cam-majority only, and --methods has max")
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "max@window=7", "-o", "ev"),
                   "method variant 'max@window=7': --window applies to majority and cam-majority only, not max")


# ------------------------------------------------------------------ misspelt keywords

def test_a_misspelt_keyword_fails_at_construction_naming_the_closest(pair, tmp_path):
    message = "^unknown option 'stepz' \\(did you mean 'steps'\\?\\)$"
    with pytest.raises(SemfuseError, match=message):
        Fuser("max", stepz=3)
    with pytest.raises(SemfuseError, match=message):
        semfuse_rt.fuse(pair, stepz=3)
    with pytest.raises(SemfuseError, match=message):
        semfuse_rt.fuse_result(pair, stepz=3)
    paths = [save_image(tmp_path / f"{n}.png", image) for n, image in zip("ab", pair)]
    with pytest.raises(SemfuseError, match=message):
        semfuse_rt.fuse_files(paths, tmp_path / "out.png", stepz=3)
    with pytest.raises(SemfuseError, match="^unknown option 'save_cam' \\(did you mean 'save_cams'\\?\\)$"):
        semfuse_rt.fuse_files(paths, tmp_path / "out.png", save_cam=tmp_path)
    assert not (tmp_path / "out.png").exists()


def test_backend_options_must_be_the_backends(pair):
    with pytest.raises(SemfuseError, match="^option 'precision' applies to the trt backend only, not ort$"):
        Fuser("max", backend="ort", precision="fp16")
    with pytest.raises(SemfuseError, match="^option 'threads' applies to the ort backend only, not cam, which runs "
                                           "on no backend$"):
        Fuser("cam", threads=2)
    assert Fuser("max", backend="ort", threads=1).backend == "ort"


def test_eval_variant_keys_are_checked_before_any_set_is_read(monkeypatch, capsys, work):
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "max@stepz=3", "-o", "ev"),
                   "method variant 'max@stepz=3': unknown option 'stepz' (did you mean 'steps'?)")
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "dwt@levls=2", "-o", "ev"),
                   "unknown option 'levls' (did you mean 'levels'?)")


def test_eval_variant_values_name_the_parameter_and_what_it_takes(monkeypatch, capsys, work):
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "dwt@levels=abc", "-o", "ev"),
                   "method variant 'dwt@levels=abc': dwt's levels takes a whole number, got 'abc'")
    assert_refused(monkeypatch, capsys, work, ("eval", "sets", "--methods", "average@levels=2", "-o", "ev"),
                   "average takes no options, got 'levels'")


# ------------------------------------------------------------------ sizes and ranges

@pytest.mark.parametrize("command", [
    FUSE,
    ("fuse-batch", "sets", "-o", "outdir"),
    ("fuse-video", "s1", "s2", "-o", "video.mp4"),
])
def test_a_400_digit_memory_budget_is_one_line_with_the_range(monkeypatch, capsys, work, command):
    line = assert_refused(monkeypatch, capsys, work, (*command, "--memory-budget", HUGE),
                          "--memory-budget must be from 1 byte to 1024T")
    assert len(line) < 200


def test_the_budget_range_holds_for_the_api_too():
    from semfuse_rt.engine.limits.memory_budget import MAX_BUDGET, parse_size

    with pytest.raises(SemfuseError, match="--memory-budget must be from 1 byte to 1024T"):
        parse_size(10 ** 400)
    assert parse_size("1024T") == MAX_BUDGET and parse_size("1.5G") == 3 * 2**29


def test_bench_checks_every_option_before_it_makes_a_folder(monkeypatch, capsys, work):
    assert_refused(monkeypatch, capsys, work, ("bench", "--sizes", "200000"), "--sizes must be from 16 to",
                   "got 200000")
    assert_refused(monkeypatch, capsys, work, ("bench", "--method", "bogus"), "unknown method 'bogus'")
    assert_refused(monkeypatch, capsys, work, ("bench", "--no-pipeline", "--method", "max"),
                   "--method does nothing with --no-pipeline")
    assert_refused(monkeypatch, capsys, work, ("bench", "--sizes", "", "--layers", "relu2_1"),
                   "--layers does nothing with --sizes ''")
    assert not (work / "bench-results").exists()


def test_build_refuses_an_opset_out_of_range_and_leaves_nothing(monkeypatch, capsys, work):
    assert_refused(monkeypatch, capsys, work, ("build", "--opset", "99999", "--out", "engines"),
                   "--opset must be from 17 to", "got 99999")


def test_a_failed_export_leaves_no_half_built_folder(monkeypatch, tmp_path, random_vgg_weights):
    from semfuse_rt.export.graphs import onnx_export

    def fail(*_args, **_kwargs):
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(onnx_export, "_export", fail)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        onnx_export.export_graphs(random_vgg_weights, "relu1_1", tmp_path / "new" / "relu1_1")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ running out of memory

@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                                                "DefaultCPUAllocator: can't allocate memory")])
def test_an_allocation_failure_is_one_line_naming_the_need_and_the_options(monkeypatch, pair, error):
    fuser = Fuser("max", backend="ort", memory_budget="1T")
    monkeypatch.setattr(Fuser, "open", lambda self: None)
    # No weights nor sessions: the fuse fails before it would use them.
    monkeypatch.setattr(Fuser, "_opened_network", lambda self: SimpleNamespace(runner=SimpleNamespace(device=None),
                                                                               semantic_phase=None))

    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(Fuser, "_fuse_planes", fail)
    monkeypatch.setattr(Fuser, "_streamed_target", fail)
    with pytest.raises(SemfuseError) as caught:
        fuser(pair)
    message = str(caught.value)
    assert message.startswith("out of memory fusing 2 images of 40x32 whole")
    assert "the whole fuse needs about" in message and "--memory-budget (now 1024.0 GiB)" in message
    assert "--tile" in message and "--max-pixels" in message and "\n" not in message


def test_a_budget_above_the_machine_is_refused_before_any_work(monkeypatch, capsys, work):
    from semfuse_rt.engine.limits import memory_budget

    # A small machine: the pair needs more than there is, though --memory-budget 1T allows it;
    # the default fuse (the start alone, without the network) by its own model, the Fuser by its.
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: memory_budget.START_ONLY_FIXED_BYTES - 2**20)
    assert_refused(monkeypatch, capsys, work, (*FUSE, "--memory-budget", "1T"),
                   "fusing 2 images of 40x32 whole needs about 128 MiB, more than the 127 MiB available, although "
                   "--memory-budget 1024.0 GiB allows it; lower --memory-budget to fuse in tiles that fit")
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: memory_budget.FIXED_BYTES)
    assert_refused(monkeypatch, capsys, work, (*FUSE, "--memory-budget", "1T", "--preset", "blend-steps"),
                   "fusing 2 images of 40x32 whole needs about 513 MiB, more than the 512 MiB available, although "
                   "--memory-budget 1024.0 GiB allows it; lower --memory-budget to fuse in tiles that fit")


LIMITED = textwrap.dedent("""
    import re, resource, sys
    from semfuse_rt.engine.fuse import fuser
    from semfuse_rt.engine.cli import main

    opened = fuser.Fuser.open

    def open_then_limit(self):
        # The limit is set once the fuser is set up, at what the process then maps plus a
        # margin far below the fuse's need: a limit fixed before start would depend on how
        # much this machine's libraries and thread pools map.
        opened(self)
        status = open("/proc/self/status").read()
        mapped = int(re.search(r"VmSize:\\s+(\\d+)", status).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 256 * 2**20, resource.RLIM_INFINITY))

    fuser.Fuser.open = open_then_limit
    sys.argv = ["semfuse-rt", *sys.argv[1:]]
    main()
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc")
def test_a_fuse_under_an_address_space_limit_ends_in_one_line(tmp_path, rng):
    from semfuse_rt.export.networks.weights import _save_cache, random_vgg19

    images = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)) for n in "ab"]
    _save_cache(tmp_path / "w.pt", random_vgg19())
    (tmp_path / "limited.py").write_text(LIMITED)
    before = snapshot(tmp_path)
    run = subprocess.run([sys.executable, str(tmp_path / "limited.py"), "fuse", *map(str, images), "-o",
                          str(tmp_path / "out.png"), "--weights", str(tmp_path / "w.pt"), "--backend", "ort",
                          "--steps", "2", "--memory-budget", "1T", "-q"],
                         capture_output=True, text=True, timeout=600, env=os.environ.copy())
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith("semfuse-rt: error: out of memory fusing 2 images of 1200x1200 whole"), lines[0]
    assert "limit on this process's address space (ulimit -v)" in lines[0] and "the whole fuse needs about" in lines[0]
    assert "lower --memory-budget (now 1024.0 GiB)" in lines[0]
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ workers

def test_workers_beyond_the_machine_are_lowered_with_one_warning(monkeypatch, capsys):
    from semfuse_rt.engine.limits import workers as options

    monkeypatch.setattr(options, "worker_limit", lambda per_worker_bytes=None: (2, "2 cores"))
    assert options.check_workers(400) == 2
    assert capsys.readouterr().err == ("semfuse-rt: warning: --workers 400 is more than this machine carries "
                                       "(2 cores); using 2\n")
    assert options.check_workers(2) == 2 and capsys.readouterr().err == ""
    with pytest.raises(SemfuseError, match="^--workers must be 1 or more, got 0$"):
        options.check_workers(0)


def test_the_worker_limit_counts_cores_and_memory(monkeypatch):
    from semfuse_rt.engine.limits import memory_budget
    from semfuse_rt.engine.limits import workers as options

    monkeypatch.setattr(options, "cores", lambda: 16)
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 3 * memory_budget.FIXED_BYTES)
    limit, why = options.worker_limit()
    assert limit == 3 and why.startswith("16 cores, 1.5 GiB available at about 512 MiB a worker")


def test_fuse_batch_lowers_400_workers_with_one_warning(monkeypatch, capsys, work):
    (work / "outdir" / "cat").mkdir(parents=True)
    (work / "outdir" / "cat" / "x.png").write_bytes(b"done")  # the one set is done: no worker starts
    code, out, err = run_cli(monkeypatch, capsys, work, "fuse-batch", "sets", "-o", "outdir", "--workers", "400")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("semfuse-rt: warning: --workers 400 is more than this machine carries")
    assert "1 skipped" in out


def test_fuse_video_lowers_400_workers_with_one_warning(monkeypatch, capsys, work):
    code, out, err = run_cli(monkeypatch, capsys, work, "fuse-video", "s1", "s2", "-o", "frames", "--workers", "400",
                             "--weights", "w.pt", "--backend", "ort", "-q")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("semfuse-rt: warning: --workers 400 is more than this machine carries")
    assert sorted(p.name for p in (work / "frames").iterdir()) == ["frame_000000.png", "frame_000001.png"]
    assert_refused(monkeypatch, capsys, work, ("fuse-video", "s1", "s2", "-o", "other", "--workers", "0"),
                   "--workers must be 1 or more, got 0")


# ------------------------------------------------------------------ progress from the API

def test_the_api_reports_progress_through_the_callback(pair, random_vgg_weights):
    seen = []
    options = dict(weights=random_vgg_weights, backend="ort", steps=3)
    semfuse_rt.fuse(pair, progress=lambda step, total, loss: seen.append((step, total)), **options)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    seen.clear()
    with Fuser(progress=lambda step, total, loss: seen.append(step), **options) as fuser:
        fuser(pair)
        fuser(pair, lambda step, total, loss: seen.append(-step))  # a call's own callback wins
    assert seen == [1, 2, 3, -1, -2, -3]


def test_without_a_callback_the_logger_says_when_a_fuse_starts_and_ends(pair, random_vgg_weights, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="semfuse_rt"):
        semfuse_rt.fuse(pair, weights=random_vgg_weights, backend="ort", steps=3, preset="paper")
    messages = [record.getMessage() for record in caplog.records if record.name == "semfuse_rt"]
    assert messages[0] == "fusing 2 images of 40x32 with max (preset paper: 3 steps on ort)"
    assert messages[-1].startswith("fused 2 images with max (preset paper) on ort in ")
    assert capsys.readouterr().out == ""  # nothing printed by default
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="semfuse_rt"):
        semfuse_rt.fuse(pair, weights=random_vgg_weights, backend="ort", steps=3)
    assert "step 3 of 3, loss" in caplog.text
