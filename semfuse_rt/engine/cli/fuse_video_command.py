"""`semfuse-rt fuse-video A.mp4 B.mp4 [C ...] -o fused.mp4`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.shared_options import (check_ray_flags, fuse_option, gpus_per_actor_option,
                                                  max_pixels_option, quiet_option, ray_actors_option,
                                                  ray_address_option, ray_timeout_option)
from semfuse_rt.engine.streams import DEFAULT_WARM_STEPS
from semfuse_rt.engine.streams import DEFAULT_CRF, MAX_FPS, MIN_FPS
from semfuse_rt.errors import SemfuseError


@app.command("fuse-video")
def fuse_video_command(
    inputs: List[Path] = typer.Argument(..., metavar="A B [C ...]",
                                        help="Two or more synchronised, registered streams: video files "
                                             "or folders of frames (taken in natural order)."),
    output: Path = typer.Option(..., "--output", "-o", help="Fused video (.mp4, .mkv, .mov; H.264), or a path "
                                                           "without a suffix for a folder of PNG frames."),
    steps: Optional[int] = typer.Option(None, help=f"Adam steps of each warm-started frame (default "
                                                   f"{DEFAULT_WARM_STEPS}); with --cold, of every frame "
                                                   "(default: the preset's)."),
    warm: bool = typer.Option(True, "--warm/--cold", help="Start each frame from what the previous one "
                                                          "learned (first frame and scene cuts run cold)."),
    fps: Optional[float] = typer.Option(None, "--fps", help=f"A video output's frame rate, {MIN_FPS:g}-{MAX_FPS:g} "
                                                            "(default: the inputs'; 25 for frame folders)."),
    crf: Optional[int] = typer.Option(None, "--crf", help=f"H.264 quality, 0-51, lower is better "
                                                          f"(default {DEFAULT_CRF})."),
    lossless: bool = typer.Option(False, "--lossless", help="Lossless H.264: grey frames bit-exact."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w",
                                          help="Fusers on this machine taking frames in turn, sharing its "
                                               "cores (default: 2 on a CPU, 1 with a GPU)."),
    ray: bool = typer.Option(False, "--ray", help="Fuse chunks of frames on Ray actors "
                                                  "(pip install 'semfuse-rt\\[ray]')."),
    ray_address: Optional[str] = ray_address_option(),
    ray_actors: int = ray_actors_option(),
    num_gpus_per_actor: float = gpus_per_actor_option(),
    ray_timeout: Optional[float] = ray_timeout_option(),
    chunk_frames: Optional[int] = typer.Option(None, "--chunk-frames",
                                               help="Frames per chunk; each chunk's first frame runs cold "
                                                    "(default with --ray: an even share per actor)."),
    method: str = fuse_option("method"),
    layer: Optional[str] = fuse_option("layer"),
    preset: Optional[str] = fuse_option("preset"),
    lr: Optional[float] = fuse_option("lr"),
    decay: Optional[str] = fuse_option("decay"),
    init: Optional[str] = fuse_option("init"),
    window: Optional[int] = fuse_option("window"),
    mean_base: Optional[float] = fuse_option("mean_base"),
    semantic_steps: Optional[int] = fuse_option("semantic_steps"),
    backend: Optional[str] = fuse_option("backend"),
    weights: Optional[Path] = fuse_option("weights"),
    classes: Optional[int] = fuse_option("classes"),
    cam_weights: Optional[Path] = fuse_option("cam_weights"),
    max_pixels: int = max_pixels_option(),
    memory_budget: Optional[str] = fuse_option("memory_budget"),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse synchronised streams frame by frame into one video at their frame rate.

    Streams must agree on frame size and count; they are checked before any
    frame is fused. The output appears only when every frame is written.
    """
    # Here, not at the top: the library imports numpy, OpenCV and PyAV (and torch where the frames
    # are not their start alone), and the bar rich.progress, which `--help` and usage errors need
    # not wait for.
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from semfuse_rt.engine.fuse import FuseOptions
    from semfuse_rt.engine.io import progress_bar
    from semfuse_rt.engine.streams import RaySettings
    from semfuse_rt.engine.streams import fuse_video

    if ray and workers is not None:
        raise SemfuseError("--workers runs fusers on this machine; with --ray give --ray-actors")
    check_ray_flags(ray, ray_address, ray_actors, num_gpus_per_actor, ray_timeout)
    # --ray names the executor; the library looks it up (engine/streams/executor_registry.py).
    executor, count, settings = (
        ("ray", ray_actors, RaySettings(address=ray_address, num_gpus_per_actor=num_gpus_per_actor,
                                        connect_timeout_s=ray_timeout))
        if ray else ("threads", workers, None))
    columns = (TextColumn("fusing frames"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} fps"), TimeRemainingColumn())
    with progress_bar(*columns, enabled=not quiet) as bar:
        task = bar.add_task("fusing", total=None, rate="-")

        first_done: list[float] = []

        def advance(done: int, total: int) -> None:
            # Frames a second since the first frame came out: setup and the cold first frame
            # would otherwise weigh on the rate of a short run.
            now = time.perf_counter()
            first_done[:] = first_done or [now]
            rate = f"{(done - 1) / (now - first_done[0]):.2f}" if done > 1 else "-"
            bar.update(task, completed=done, total=total, rate=rate)

        # --steps is the warm frames' (fuse_video's own); None leaves an option to the method or
        # preset, and the library picks the fuser (engine/api.py, make_fuser) by those given.
        options = FuseOptions(
            method=method, layer=layer, preset=preset, lr=lr, decay=decay, init=init, window=window,
            mean_base=mean_base, semantic_steps=semantic_steps, backend=backend, weights=weights, classes=classes,
            cam_weights=cam_weights, memory_budget=memory_budget, show_progress=not quiet)
        summary = fuse_video(
            inputs, output, options, warm=warm, steps=steps, fps=fps, quality=crf, lossless=lossless,
            max_pixels=max_pixels, progress=advance, executor=executor, workers=count, ray=settings,
            chunk_frames=chunk_frames,
        )
    typer.echo(f"{summary.summary(len(inputs))} -> {output}")
