"""How many CPU threads llama.cpp should use: physical cores, minus what other processes keep busy."""

from __future__ import annotations

import os
import platform
import time


def physical_cores() -> int:
    """Physical cores (hyper-threads slow token generation down), else the logical count."""
    logical = os.cpu_count() or 1
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = logical
    cores = _linux_physical_cores() if platform.system() == "Linux" else None
    if cores is None and platform.system() == "Darwin":
        cores = _sysctl_int("hw.perflevel0.physicalcpu") or _sysctl_int("hw.physicalcpu")
    return max(1, min(cores or logical, affinity))


def default_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Physical cores minus those other processes keep busy right now (at least 1)."""
    # llama.cpp's threads spin at every barrier: one more thread than there are free cores made generation
    # 100x slower on a shared 2-core machine (0.4 vs 62 tok/s), while one thread fewer costs at most the lost core.
    cores = cores or physical_cores()
    if busy is None:
        busy = other_busy_cores()
    return max(1, min(cores, cores - int(busy + 0.5)))


def other_busy_cores(samples: int = 4, interval: float = 0.004) -> float:
    """How many cores other processes use: the smaller of the 1-minute load and the tasks runnable now (minus us)."""
    # The runnable count is an instant: a process that merely woke up (a shell, a just-exiting child) would cost a
    # thread for the whole run, so only what stays runnable across a few samples over ~12 ms counts.
    try:
        load, runnable = _loadavg()
        for _ in range(samples - 1):
            time.sleep(interval)
            runnable = min(runnable, _loadavg()[1])
        return float(max(0.0, min(load, runnable - 1)))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, os.getloadavg()[0] - 1)  # macOS/BSD: no instantaneous count, so allow for ourselves
    except (AttributeError, OSError):
        return 0.0


def _loadavg() -> tuple[float, int]:
    """Linux's 1-minute load average and the number of tasks runnable this instant (ourselves included)."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        fields = fh.read().split()
    return float(fields[0]), int(fields[3].split("/")[0])


def _linux_physical_cores() -> int | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    pairs = set()
    phys = core = None
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    return len(pairs) or None


def _sysctl_int(name: str) -> int | None:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2).stdout
        return int(out.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
