"""What a one-shot command imports (issue 31, item 6): `--help`, `--version`, usage errors and
the default fuse answer without torch or onnxruntime, whose import is most of the wait, or
pydantic, through which Typer 0.29 coerces every option (0.135 s). Checked in a fresh
interpreter per command, through `main()` as the console script runs it, by the modules it
left in sys.modules: deterministic, unlike a timing."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semfuse_rt.engine.cli.application import load_commands
from semfuse_rt.engine.fuse.methods import METHODS
from semfuse_rt.kernels.rules.majority import Majority

HEAVY = ("torch", "onnxruntime", "pydantic")

# The command line, then which of HEAVY it imported, as the last line on stderr (`finally`:
# help, usage errors and --version all leave main() by SystemExit).
_PROBE = f"""
import json, sys
sys.argv = ["semfuse-rt", *sys.argv[1:]]
try:
    from semfuse_rt.engine.cli import main
    main()
finally:
    print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]), file=sys.stderr)
"""


def run_probe(*args: str) -> tuple[int, str, list[str], list[str]]:
    """(exit status, stdout, stderr lines before the probe's own, heavy modules imported)."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert lines, run.stderr
    return run.returncode, run.stdout, lines[:-1], json.loads(lines[-1])


COMMANDS = [info.name for info in load_commands().registered_commands]


def test_every_command_is_probed():
    # The commands register on import; a new one is probed below without being listed here.
    assert {"fuse", "fuse-video", "cam", "weights", "build", "bench", "eval", "score", "fuse-batch"} <= set(COMMANDS)


@pytest.mark.parametrize("args", [["--help"], [], *([name, "--help"] for name in COMMANDS)],
                         ids=lambda args: " ".join(args) or "bare")
def test_help_imports_nothing_heavy(args):
    code, stdout, errors, heavy = run_probe(*args)
    assert code == 0 and errors == [] and "Usage: semfuse-rt" in stdout, (stdout, errors)
    assert heavy == [], f"semfuse-rt {' '.join(args)} imported {heavy}"


def test_version_imports_nothing_heavy():
    code, stdout, errors, heavy = run_probe("--version")
    assert code == 0 and errors == [] and stdout.startswith("semfuse-rt ")
    assert heavy == []


@pytest.mark.parametrize("args, message", [
    (["fuse", "a.png", "b.png"], "Missing option '--output' / '-o'. (see semfuse-rt fuse --help)"),
    (["fuse", "a.png", "b.png", "-o", "c.png", "--steps", "many"], "Invalid value for '--steps'"),
    (["fuse", "a.png", "b.png", "-o", "c.png", "--no-such-option"], "No such option: --no-such-option"),
    (["fuse-video", "a.mp4"], "Missing option '--output' / '-o'."),
    (["eval"], "Missing argument 'DIR|SETS.csv'."),
    (["nonsense"], "No such command 'nonsense'."),
], ids=["missing output", "bad number", "unknown option", "video", "eval", "unknown command"])
def test_usage_errors_import_nothing_heavy(tmp_path, args, message):
    code, stdout, errors, heavy = run_probe(*args)
    assert code == 2 and stdout == "" and len(errors) == 1, errors
    assert errors[0].startswith("semfuse-rt: error: ") and message in errors[0], errors
    assert heavy == []


def test_the_default_fuse_imports_nothing_heavy(tmp_path):
    pair = [str(Path(__file__).resolve().parents[1] / "examples" / f"lytro-01-{label}.jpg") for label in "AB"]
    code, stdout, errors, heavy = run_probe("fuse", *pair, "-o", str(tmp_path / "fused.png"), "-q")
    assert code == 0 and (tmp_path / "fused.png").is_file(), errors
    assert heavy == []


def test_the_methods_name_their_rules():
    # engine/fuse/methods.py names each method's rule, so that it need not import torch to list
    # the methods; the named rule is the one that filters by majority, or not.
    for method in METHODS.values():
        rule = method.feature_rule(5)
        assert (rule is None) == (not method.optimised)
        assert method.filtered == isinstance(rule, Majority)
        assert rule is None or rule.name == method.rule


# --------------------------------------------------------------------------- torch failing to load in a command

class _FailingLibrary:
    """A meta-path finder for one module whose top-level code raises `error`, as torch's does
    when the loader cannot map its libraries (a tight ulimit -v)."""

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error

    def find_spec(self, name, _path=None, _target=None):
        return importlib.util.spec_from_loader(name, self) if name == self.name else None

    def create_module(self, _spec):
        return None

    def exec_module(self, module):
        exec(compile("raise error", "<library>", "exec"), {"error": self.error})


@pytest.mark.parametrize("error, reason", [
    (ImportError("libtorch_cpu.so: failed to map segment from shared object"),
     "libtorch_cpu.so: failed to map segment from shared object"),
    (OSError("libgomp.so.1: failed to map segment from shared object"),
     "libgomp.so.1: failed to map segment from shared object"),
    (MemoryError(), "MemoryError"),
], ids=["ImportError", "ctypes", "MemoryError"])
def test_torch_failing_to_load_in_a_command_is_the_loading_line(tmp_path, monkeypatch, capfd, error, reason):
    """The commands import the library (and torch) when they run, after their arguments are
    parsed: a failure to load it there is still the one line of a failure to load, and an
    exit at once (os._exit), not a fuse that ran out of memory."""
    from semfuse_rt.engine.cli import main

    class ExitedAtOnce(SystemExit):
        pass

    def exit_now(status):  # os._exit, which would end pytest too
        raise ExitedAtOnce(status)

    monkeypatch.delitem(sys.modules, "semfuse_rt.engine.api", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingLibrary("semfuse_rt.engine.api", error), *sys.meta_path])
    monkeypatch.setattr(os, "_exit", exit_now)
    out = tmp_path / "fused.png"
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "fuse", "a.png", "b.png", "-o", str(out)])
    with pytest.raises(ExitedAtOnce) as exit_info:
        main()
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2 and captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith(f"semfuse-rt: error: out of memory loading semfuse-rt's libraries ({reason})")
    assert list(tmp_path.iterdir()) == []
