"""Which process owns a working folder, so that a later run can tell a killed run's leftovers
from a live run's files.

A pid alone would mistake a new process that reuses the number for the owner, so the record
also holds the process's start time and the boot's id (Linux /proc). A cache folder can be
shared by other machines or containers, whose processes this one cannot see: a record made
on another host or in another pid namespace is not judged, and the age rule applies to it.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

OWNER_FILE = "owner.json"


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Clock ticks from boot to the process's start (field 22 of /proc/PID/stat)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _this_machine() -> dict:
    return {"host": socket.gethostname(), "boot": _read("/proc/sys/kernel/random/boot_id"),
            "pid_namespace": _pid_namespace()}


def write_owner_record(folder: Path, pid: int | None = None) -> None:
    """Record process `pid` (this one by default) as the owner of `folder`."""
    pid = os.getpid() if pid is None else pid
    record = {**_this_machine(), "pid": pid, "started": _start_time(pid)}
    # Written under a temporary name and renamed: a sweep never reads half a record.
    temporary = folder / f".{OWNER_FILE}.partial"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, folder / OWNER_FILE)


def owner_is_gone(folder: Path) -> bool | None:
    """True when the process recorded as the folder's owner has ended, False while it runs,
    None when the folder has no readable record or its owner cannot be seen from here."""
    try:
        record = json.loads((folder / OWNER_FILE).read_text())
        pid, started = int(record["pid"]), record.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    here = _this_machine()
    if record.get("host") != here["host"]:
        return None
    if record.get("boot") and here["boot"] and record["boot"] != here["boot"]:
        return True  # rebooted since: every process of that boot has ended
    if record.get("pid_namespace") != here["pid_namespace"]:
        return None
    if started is not None:
        return _start_time(pid) != started  # gone, or the pid now names another process
    try:
        os.kill(pid, 0)  # no start time where /proc is missing: a pid in use counts as the owner
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
