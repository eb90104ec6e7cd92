"""Types and lint (issue 29): CI runs only pytest, so mypy and ruff run here, over the
package, with the settings in pyproject.toml, each in a subprocess from the clone's root as a
developer runs them (`python -m mypy`, `python -m ruff check`). Both checkers come with the
`test` extra; a missing one fails these tests rather than skipping them."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _package_modules() -> set[str]:
    """Every module of the package, its links followed, relative to semfuse_rt/."""
    package = ROOT / "semfuse_rt"
    return {str(Path(folder, name).relative_to(package))
            for folder, _, names in os.walk(package, followlinks=True) for name in names if name.endswith(".py")}


def test_mypy_finds_no_errors_in_any_module_of_the_package():
    result = _run("mypy")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mypy found problems:\n{output}"
    # Each module once, by its package name, the linked folders' included: mypy stops on a
    # module it finds twice, and a module it never reached would pass unchecked.
    checked = re.search(r"no issues found in (\d+) source files", output)
    assert checked is not None, output
    assert int(checked.group(1)) == len(_package_modules()), output


def test_ruff_finds_nothing_in_any_module_of_the_package():
    result = _run("ruff", "check")
    assert result.returncode == 0, f"ruff found problems:\n{result.stdout}{result.stderr}"
    # ruff does not follow the links under semfuse_rt/: it must see the folders they point to.
    listed = _run("ruff", "check", "--show-files").stdout
    seen = {Path(line).resolve() for line in listed.splitlines() if line.strip()}
    files = {(ROOT / "semfuse_rt" / module).resolve() for module in _package_modules()}  # links resolved
    assert files <= seen, f"ruff does not check {sorted(str(f.relative_to(ROOT)) for f in files - seen)}"
