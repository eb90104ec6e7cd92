"""Options that several commands take, defined once so that they cannot drift apart."""
from __future__ import annotations

import copy
import inspect
from typing import Optional

import typer

from semfuse_rt.engine.cli.fuse_command import fuse_command
from semfuse_rt.engine.streams.ray_session import DEFAULT_CONNECT_TIMEOUT_S, check_connect_timeout
from semfuse_rt.errors import SemfuseError

_FUSE_PARAMETERS = inspect.signature(fuse_command).parameters


def same_as_fuse(name: str):
    """`fuse`'s definition of option `name` (flags, default, help)."""
    return copy.copy(_FUSE_PARAMETERS[name].default)


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
