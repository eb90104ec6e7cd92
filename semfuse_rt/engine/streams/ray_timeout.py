"""How long a Ray cluster given by its address has to answer (`--ray-timeout`), apart from
ray_session.py so that the commands' options load without its sockets and logging."""
from __future__ import annotations

import math

from semfuse_rt.errors import SemfuseError

# A live cluster accepts a connection and answers in milliseconds, even across a network
# (ray_session.check_cluster_answers).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
MAX_CONNECT_TIMEOUT_S = 3600.0


def check_connect_timeout(seconds: float) -> float:
    if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds)
            or not 0 < seconds <= MAX_CONNECT_TIMEOUT_S):
        raise SemfuseError(f"--ray-timeout must be a number of seconds above 0 and at most "
                           f"{MAX_CONNECT_TIMEOUT_S:g}, got {seconds}")
    return float(seconds)
