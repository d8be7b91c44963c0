"""The one CPU meter, from /proc: what each process and the whole machine used, in cores between readings.

For the bench and the soaks alike: a process's user + system CPU seconds from
``/proc/<pid>/stat`` (the database server's too: lib.db.server_pid finds it), the machine's busy
seconds from ``/proc/stat``, and the CPU of this process's children that have been waited for
(wrk, which has ended before it is read).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
#: The entries of a reading beside the process groups.
BUSY, TOTAL, WAITED = "machine busy", "machine total", "waited children"


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process so far (utime + stime of /proc/<pid>/stat); 0 if gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from the first line of /proc/stat.

    Total is user + nice + system + idle + iowait + irq + softirq + steal (guest time is
    counted in user and nice already); busy is total less idle and iowait.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(values)
    return (total - values[3] - values[4]) / TICK, total / TICK


def waited_children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_name(pid: int) -> str | None:
    """The process's command name (/proc/<pid>/comm), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def processes_named(*names: str) -> list[int]:
    """The PIDs of the processes whose command name is one of ``names``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and command_name(int(entry.name)) in names:
            found.append(int(entry.name))
    return found


def reading(groups: Mapping[str, Iterable[int | None]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes, and BUSY, TOTAL and WAITED."""
    found = {name: sum(process_cpu(pid) for pid in pids) for name, pids in groups.items()}
    found[BUSY], found[TOTAL] = machine_cpu()
    found[WAITED] = waited_children_cpu()
    return found


class CpuMeter:
    """What each group of processes, and the machine, used from its creation to ``cores()``."""

    def __init__(self, groups: Mapping[str, Iterable[int | None]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.before = reading(self.groups)
        self.started = time.monotonic()

    def cores(self) -> dict[str, float]:
        """Each entry's CPU since creation in cores (1.0 = one core busy all along): the groups,
        BUSY (the whole machine), TOTAL (the cores there are) and WAITED (children waited for)."""
        after = reading(self.groups)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {name: (after[name] - self.before[name]) / elapsed for name in after}
