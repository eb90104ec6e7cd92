"""Types, lint and import contracts (issue 29): CI runs the README's pytest command, so mypy,
ruff and import-linter run here, over the package, with the settings in pyproject.toml, each in
a subprocess from the clone's root as a developer runs them (`python -m mypy`, `python -m ruff
check`, `lint-imports`). All three come with the `test` extra; a missing one fails these tests
rather than skipping them."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _package_modules() -> set[str]:
    """Every module of the package, relative to semfuse_rt/."""
    package = ROOT / "semfuse_rt"
    return {str(path.relative_to(package)) for path in package.rglob("*.py")}


def test_mypy_finds_no_errors_in_any_module_of_the_package():
    result = _run("mypy")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mypy found problems:\n{output}"
    # Each module once: a module it never reached would pass unchecked.
    checked = re.search(r"no issues found in (\d+) source files", output)
    assert checked is not None, output
    assert int(checked.group(1)) == len(_package_modules()), output


def test_ruff_finds_nothing_in_any_module_of_the_package():
    result = _run("ruff", "check")
    assert result.returncode == 0, f"ruff found problems:\n{result.stdout}{result.stderr}"
    listed = _run("ruff", "check", "--show-files").stdout
    seen = {Path(line).resolve() for line in listed.splitlines() if line.strip()}
    files = {(ROOT / "semfuse_rt" / module).resolve() for module in _package_modules()}
    assert files <= seen, f"ruff does not check {sorted(str(f.relative_to(ROOT)) for f in files - seen)}"


def test_every_import_contract_is_kept():
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"import contracts broken:\n{result.stdout}{result.stderr}"
    contracts = re.findall(r"^(.+) (KEPT|BROKEN)$", result.stdout, re.MULTILINE)
    assert len(contracts) >= 4 and all(state == "KEPT" for _, state in contracts), result.stdout
