"""CPU time and RSS of processes from /proc (Linux)."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu_seconds(stat_line: str) -> float:
    """utime + stime of a `/proc/PID/stat` line, in seconds.

    The command name (field 2) may contain spaces and parentheses: fields are counted after the
    last `)`. utime and stime are fields 14 and 15.
    """
    rest = stat_line.rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): field N is rest[N - 3].
    return (int(rest[11]) + int(rest[12])) / _TICKS


def parse_status_rss_kb(status_text: str) -> int:
    """VmRSS of a `/proc/PID/status` text, in KB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat_cpu_seconds(f.read())


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return parse_status_rss_kb(f.read())


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/stat")


def total_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the live processes among `pids`, summed."""
    return sum(cpu_seconds(p) for p in pids if alive(p))


def total_rss_kb(pids: list[int]) -> int:
    """RSS of the live processes among `pids`, summed."""
    return sum(rss_kb(p) for p in pids if alive(p))
