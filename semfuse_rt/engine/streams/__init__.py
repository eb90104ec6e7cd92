"""Many fuses: video and batches, run by one executor interface with processes, threads or
Ray as executors.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.streams.batch import (
        BatchReport, DEFAULT_EXTENSION, DiskFull, SetOutcome, plan_batch, run_batch,
    )
    from semfuse_rt.engine.streams.executors import RaySettings
    from semfuse_rt.engine.streams.ray_timeout import DEFAULT_CONNECT_TIMEOUT_S, check_connect_timeout
    from semfuse_rt.engine.streams.video_defaults import DEFAULT_WARM_STEPS
    from semfuse_rt.engine.streams.video_fusion import fuse_video
    from semfuse_rt.engine.streams.video_io import DEFAULT_CRF, MAX_FPS, MIN_FPS

__all__ = [
    "BatchReport", "DEFAULT_EXTENSION", "DiskFull", "SetOutcome", "plan_batch", "run_batch", "RaySettings",
    "DEFAULT_CONNECT_TIMEOUT_S", "check_connect_timeout", "DEFAULT_WARM_STEPS", "fuse_video", "DEFAULT_CRF",
    "MAX_FPS", "MIN_FPS"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "BatchReport": "batch",
    "DEFAULT_EXTENSION": "batch",
    "DiskFull": "batch",
    "SetOutcome": "batch",
    "plan_batch": "batch",
    "run_batch": "batch",
    "RaySettings": "executors",
    "DEFAULT_CONNECT_TIMEOUT_S": "ray_timeout",
    "check_connect_timeout": "ray_timeout",
    "DEFAULT_WARM_STEPS": "video_defaults",
    "fuse_video": "video_fusion",
    "DEFAULT_CRF": "video_io",
    "MAX_FPS": "video_io",
    "MIN_FPS": "video_io",
})
