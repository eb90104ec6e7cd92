"""How many fusers side by side this machine carries: cores, then memory."""
from __future__ import annotations

import os
import sys

from semfuse_rt.errors import SemfuseError


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_limit(per_worker_bytes: int | None = None) -> tuple[int, str]:
    """How many fusers side by side this machine carries, and why: one per core (more only
    split the cores further), and no more than the memory available holds at
    `per_worker_bytes` each (default: one fuser's libraries, weights and sessions)."""
    from semfuse_rt.engine.limits.memory_budget import FIXED_BYTES, available_bytes, describe

    per_worker = per_worker_bytes or FIXED_BYTES
    limit, why = cores(), f"{cores()} cores"
    available = available_bytes()
    if available is not None:
        limit = max(1, min(limit, available // per_worker))
        why += f", {describe(available)} available at about {describe(per_worker)} a worker"
    return limit, why


def check_workers(workers: int, per_worker_bytes: int | None = None) -> int:
    """--workers as it will run: below 1 is an error; above what the machine carries
    (worker_limit) it is lowered to that, with a one-line warning on stderr, so that one
    command line serves machines of different sizes."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SemfuseError(f"--workers must be 1 or more, got {workers}")
    limit, why = worker_limit(per_worker_bytes)
    if workers > limit:
        print(f"semfuse-rt: warning: --workers {workers} is more than this machine carries ({why}); "
              f"using {limit}", file=sys.stderr)
        return limit
    return workers
