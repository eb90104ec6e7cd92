"""Options that several commands take, defined once so that they cannot drift apart. A fuse's
options are the library's (engine/fuse/fuse_options.py): their flags, defaults and help come
from FuseOptions' fields."""
from __future__ import annotations

from typing import Any, Optional

import typer

from semfuse_rt.engine.fuse import cli_fields
from semfuse_rt.engine.fuse import option_flag
from semfuse_rt.engine.limits import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.streams import DEFAULT_CONNECT_TIMEOUT_S, check_connect_timeout
from semfuse_rt.errors import SemfuseError


def fuse_option(name: str) -> Any:
    """The option for FuseOptions' field `name`: its flag (and short flag), default and help."""
    item = cli_fields()[name]
    return typer.Option(item.default, option_flag(name), *item.metadata["short"], help=item.metadata["help"])


def max_pixels_option() -> int:
    return typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels",
                        help="Largest input accepted, in pixels per image (read from its header).")


def quiet_option() -> bool:
    return typer.Option(False, "--quiet", "-q", help="No progress bar, nor the notice of a first-time weights fetch.")


def ray_address_option() -> Optional[str]:
    return typer.Option(None, "--ray-address", help="With --ray: the cluster's HOST:PORT, or auto for the one "
                                                     "`ray start` runs here (default: a local Ray instance).")


def ray_actors_option() -> int:
    return typer.Option(1, "--ray-actors", help="With --ray: actors, each holding one fuser.")


def gpus_per_actor_option() -> float:
    return typer.Option(0.0, "--num-gpus-per-actor",
                        help="With --ray: GPUs each actor claims on a GPU cluster (a fraction shares one).")


def ray_timeout_option() -> Optional[float]:
    return typer.Option(None, "--ray-timeout", metavar="SECONDS",
                        help="With --ray-address: how long the cluster has to accept a connection and "
                             "answer, before one line says that it is not there "
                             f"(default {DEFAULT_CONNECT_TIMEOUT_S:g}).")


def check_ray_flags(ray: bool, address: str | None, actors: int, gpus_per_actor: float,
                    timeout: float | None = None) -> None:
    if not ray and (address is not None or actors != 1 or gpus_per_actor or timeout is not None):
        raise SemfuseError("--ray-address, --ray-actors, --num-gpus-per-actor and --ray-timeout need --ray")
    if timeout is not None:
        if address is None:
            raise SemfuseError("--ray-timeout bounds the connection to --ray-address; a local Ray instance "
                               "has none: give --ray-address or leave out --ray-timeout")
        check_connect_timeout(timeout)
