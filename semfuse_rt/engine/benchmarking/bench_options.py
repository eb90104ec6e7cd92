"""The options of `semfuse-rt bench`, checked before anything is loaded or any folder is made:
the pipeline timing's (a fuse's method, preset and backend, runs), the loop timing's
(backends, layers, sizes, steps, repeats) and --graph's. An option of a part that does not
run (--method with --no-pipeline, say) is an error, not silence. This module imports no
torch: the command's help shows its defaults."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semfuse_rt.engine.fuse.methods import DEFAULT_LAYER, DEFAULT_METHOD
from semfuse_rt.errors import SemfuseError

DEFAULT_RUNS = 10
DEFAULT_LOOP_STEPS = 20
DEFAULT_REPEATS = 3
DEFAULT_SIZES = "256"


@dataclass(frozen=True)
class BenchPlan:
    """What a checked `bench` times. `fuse_options`: the pipeline's Fuser options (preset,
    backend) where it times the fuse, not a graph; `optimised`: whether that fuse runs the
    VGG19 network, and so takes the weights."""

    method: str
    runs: int
    warmup: int
    backends: list[str]
    layers: list[str]
    sizes: list[int]
    steps: int
    repeats: int
    fuse_options: dict[str, Any] = field(default_factory=dict)
    optimised: bool = False


def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option's items; None for an empty or missing one."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def check_bench_options(*, inputs: Sequence[Path] | None, method: str | None, preset: str | None,
                        backend: str | None, runs: int | None, pipeline: bool, backends: str | None,
                        layers: str | None, sizes: str | None, steps: int | None, repeats: int | None,
                        warmup: int, graph: Path | None, out: Path) -> BenchPlan:
    """Every option of `bench`, in the order the command names a problem; the report folder
    too (it can be written, and no report replaces an input). None: the default."""
    # Here, not at the top: these import torch, which the command's --help need not wait for.
    from semfuse_rt.engine.backends import available_backends, resolve_backend
    from semfuse_rt.engine.benchmarking.benchmark import check_report_folder, check_sizes
    from semfuse_rt.engine.deploy.graph_manifest import manifest_path
    from semfuse_rt.export.networks.vgg19 import check_layer

    if graph is not None:
        _check_graph_options(pipeline, method=method, preset=preset, backends=backends, layers=layers, sizes=sizes,
                             steps=steps, repeats=repeats)
    size_list = check_sizes(split_list(DEFAULT_SIZES if sizes is None else sizes) or []) if graph is None else []
    _check_unused("--no-pipeline", not pipeline, inputs=inputs, method=method, preset=preset, backend=backend,
                  runs=runs)
    _check_unused("--sizes ''", not size_list, backends=backends, layers=layers, steps=steps, repeats=repeats)
    chosen_method, chosen_runs = method or DEFAULT_METHOD, DEFAULT_RUNS if runs is None else runs
    chosen_steps = DEFAULT_LOOP_STEPS if steps is None else steps
    chosen_repeats = DEFAULT_REPEATS if repeats is None else repeats
    chosen = [resolve_backend(b) for b in split_list(backends) or []] if backends else available_backends()
    layer_list = [check_layer(layer) for layer in split_list(layers or DEFAULT_LAYER) or []]
    for name, value, least in (("--runs", chosen_runs, 1), ("--repeats", chosen_repeats, 1), ("--warmup", warmup, 0),
                               ("--steps", chosen_steps, 11)):
        if value < least:
            raise SemfuseError(f"{name} must be at least {least}, got {value}")
    if inputs is not None and len(inputs) == 1:
        raise SemfuseError("the pipeline timing needs at least 2 images, got 1")
    check_report_folder(out, [*(inputs or ()), *((graph, manifest_path(graph)) if graph is not None else ())])
    plan = BenchPlan(chosen_method, chosen_runs, warmup, chosen, layer_list, size_list, chosen_steps, chosen_repeats)
    if graph is not None:
        return plan
    from semfuse_rt.engine.fuse.fuser import Fuser

    given: dict[str, Any] = {name: value for name, value in (("preset", preset), ("backend", backend))
                             if value is not None}
    optimised = Fuser(chosen_method, **given).method.optimised  # the pipeline's options, checked
    return BenchPlan(chosen_method, chosen_runs, warmup, chosen, layer_list, size_list, chosen_steps, chosen_repeats,
                     given, optimised)


def _check_graph_options(pipeline: bool, **options: Any) -> None:
    """What --graph leaves no part to: the fuse is the one the graph's manifest records, and
    the loop is not timed."""
    given = [f"--{name}" for name, value in options.items() if value is not None] + \
        ([] if pipeline else ["--no-pipeline"])
    if given:
        raise SemfuseError(f"{given[0]} does not apply with --graph: it times the graph beside the fuse its "
                           "manifest records (preset and options), and not the loop; leave it out")


def _check_unused(reason: str, unused: bool, **options: Any) -> None:
    """Options of a part of the benchmark that `reason` turns off."""
    given = [f"--{name}" if name != "inputs" else "input images" for name, value in options.items()
             if value is not None]
    if unused and given:
        raise SemfuseError(f"{given[0]} does nothing with {reason}: that part of the benchmark does not run")
