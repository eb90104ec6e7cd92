"""The root of `semfuse-rt` lists its commands from a registry (engine/cli/application.py,
COMMANDS) and imports a command's module only to run it or show its own help (issue 31,
item 6: `semfuse-rt --help` within 0.3 s). Checked by the modules a fresh interpreter has
loaded, not by timings; and the registry's summaries against the commands' own help, so
that the two cannot drift apart."""
import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from semfuse_rt.engine.cli import application
from semfuse_rt.engine.cli.application import COMMANDS, load_commands
from conftest import run_main, the_one_error_line

CLI_PACKAGE = "semfuse_rt.engine.cli"
COMMAND_MODULES = {f"{CLI_PACKAGE}.{entry.module}" for entry in COMMANDS.values()}
# What the root's help and usage errors do without: the commands' libraries, and pydantic,
# which Typer imports to coerce an option's value that is not yet of its type.
LIBRARIES = ("numpy", "cv2", "PIL", "torch", "onnxruntime", "pydantic")

# The command line through main(), as the console script runs it; then, as the last line on
# stderr, the command modules and LIBRARIES that it left in sys.modules.
_PROBE = f"""
import json, sys
sys.argv = ["semfuse-rt", *sys.argv[1:]]
try:
    from semfuse_rt.engine.cli import main
    main()
finally:
    loaded = [name for name in sys.modules if name in {sorted(COMMAND_MODULES)!r} or name in {LIBRARIES!r}]
    print(json.dumps(sorted(loaded)), file=sys.stderr)
"""


def run_probe(*args: str) -> tuple[int, str, list[str], set[str]]:
    """(exit status, stdout, stderr lines before the probe's own, command modules and LIBRARIES loaded)."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert lines, run.stderr
    return run.returncode, run.stdout, lines[:-1], set(json.loads(lines[-1]))


def words(text: str) -> str:
    """`text` with its line breaks and runs of spaces as single spaces: a wrapped help reads the same."""
    return " ".join(text.split())


def first_paragraph(command) -> str:
    return words(inspect.cleandoc(command.help or "").split("\n\n")[0])


def real_commands() -> dict:
    """The commands as Typer makes them from their modules: name -> Click command."""
    group = typer.main.get_command(load_commands())
    return {name: group.get_command(None, name) for name in COMMANDS}


def cli_imports(module: str) -> set[str]:
    """The modules of engine/cli that `module` imports when it is imported (its top-level
    imports, then theirs): what showing its help must load with it."""
    found, pending = set(), [module]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        source = Path(application.__file__).with_name(f"{name.rpartition('.')[2]}.py").read_text()
        for node in ast.parse(source).body:  # top level only: imports in functions wait for a run
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{CLI_PACKAGE}."):
                pending.append(node.module or "")
    return found


# --------------------------------------------------------------------------- the registry

def test_the_registry_names_every_command_and_its_module():
    registered = {info.name: info.callback.__module__ for info in load_commands().registered_commands}
    assert registered == {name: f"{CLI_PACKAGE}.{entry.module}" for name, entry in COMMANDS.items()}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_summary_is_the_first_paragraph_of_the_commands_own_help(name):
    command = real_commands()[name]
    assert COMMANDS[name].summary == first_paragraph(command), (
        f"engine/cli/application.py: COMMANDS[{name!r}].summary differs from the first paragraph of "
        f"`semfuse-rt {name} --help`; make them the same")


def test_the_summaries_are_one_line_each():
    # write_dl wraps them; a line break inside one would start a new row.
    assert all(entry.summary == words(entry.summary) and entry.summary for entry in COMMANDS.values())


# --------------------------------------------------------------------------- what the root loads

@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "bare"])
def test_the_root_help_lists_every_command_and_imports_none(args):
    code, stdout, errors, loaded = run_probe(*args)
    assert code == 0 and errors == [], errors
    assert loaded == set(), f"semfuse-rt {' '.join(args)} imported {sorted(loaded)}"
    text = words(stdout)
    assert text.startswith("Usage: semfuse-rt [OPTIONS] COMMAND [ARGS]...")
    # Each with its whole summary (Click's own listing would cut it short), in the registry's order.
    positions = [text.index(f" {name} {entry.summary}") for name, entry in COMMANDS.items()]
    assert positions == sorted(positions)


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "No such command 'nosuch'. (see semfuse-rt --help)"),
    (["fus"], "No such command 'fus'. Did you mean 'fuse'? (see semfuse-rt --help)"),
    (["--no-such-option"], "No such option: --no-such-option (see semfuse-rt --help)"),
], ids=["unknown command", "typo", "unknown option"])
def test_root_usage_errors_are_one_line_and_import_no_command(args, message):
    code, stdout, errors, loaded = run_probe(*args)
    assert code == 2 and stdout == "" and errors == [f"semfuse-rt: error: {message}"], errors
    assert loaded == set(), f"semfuse-rt {' '.join(args)} imported {sorted(loaded)}"


def test_version_imports_no_command():
    code, stdout, errors, loaded = run_probe("--version")
    assert code == 0 and errors == [] and stdout.startswith("semfuse-rt ")
    assert loaded == set()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_commands_help_loads_that_command_alone(name):
    code, stdout, errors, loaded = run_probe(name, "--help")
    assert code == 0 and errors == [], errors
    assert words(COMMANDS[name].summary) in words(stdout) and f"Usage: semfuse-rt {name} " in words(stdout)
    own = f"{CLI_PACKAGE}.{COMMANDS[name].module}"
    assert loaded & COMMAND_MODULES == cli_imports(own) & COMMAND_MODULES
    assert not loaded & {"torch", "onnxruntime"}


# --------------------------------------------------------------------------- in one process

def test_the_root_help_in_a_process_that_loaded_every_command(monkeypatch, capsys):
    # A test's process has every command registered: the listing is the registry's all the same.
    load_commands()
    code, out, err = run_main(monkeypatch, capsys, "--help")
    assert code == 0 and err == ""
    assert [line.split()[0] for line in out.split("Commands:")[1].splitlines()
            if re.match(r"  \S", line)] == list(COMMANDS)


def test_an_unknown_command_in_process_is_one_line(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "frobnicate", "--help")
    assert out == ""
    assert the_one_error_line(code, err) == "semfuse-rt: error: No such command 'frobnicate'. (see semfuse-rt --help)"
