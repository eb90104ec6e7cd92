"""Peak resident memory of this process during a block, sampled from /proc."""
from __future__ import annotations

import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:  # not Linux: no cheap reading, report nothing rather than guess
        return 0


def peak_resident_bytes() -> int:
    """This process's highest resident size so far (getrusage); 0 where it is not known."""
    try:
        import resource

        kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return 0
    return kilobytes * 1024  # Linux reports kilobytes


class PeakResident:
    """with PeakResident() as peak: ...; peak.growth is the peak RSS above the start."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakResident":
        self.start = self.peak = resident_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.start)


def return_free_memory() -> None:
    """Hand the C heap's free memory back to the system (glibc's malloc_trim). The band
    buffers of a fuse are a few MB each: glibc keeps such blocks on its heap once freed, and
    without this each further fuse of a large image left the process about 0.4 GB larger
    (2 x 2 MP: peaks of 1.7, 2.1, 2.1 GiB over three fuses; 1.7 each with it)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
