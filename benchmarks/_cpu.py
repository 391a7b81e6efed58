"""CPU time of a process, ours or a child's: who was busy while the wall clock ran."""

from __future__ import annotations

import os

__all__ = ["process_cpu_seconds"]

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, from ``/proc/PID/stat`` (Linux)."""
    with open(f"/proc/{pid}/stat") as file:
        # The command name may hold spaces: fields are counted from after its closing ')'.
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
