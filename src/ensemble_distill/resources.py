"""What the machine has to give: the memory available now, and byte counts for messages.

Every check that refuses work too big for the machine (a ``distill_data`` array, in-memory
images, a teacher of many members) reads :func:`available_memory` before the work starts and
names the sizes with :func:`byte_text`.
"""

from __future__ import annotations

from pathlib import Path


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's MemAvailable, lowered to what its
    cgroup (container) limit leaves; None where neither is known (no /proc, no cgroup)."""
    known = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            known.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(known) if known else None


def byte_text(count: float) -> str:
    """``count`` bytes for a reader, in powers of 1000: ``512 B``, ``80 kB``, ``1.5 GB``,
    ``256 TB``."""
    units, power = ("B", "kB", "MB", "GB", "TB", "PB", "EB"), 0
    while count >= 1000 and power < len(units) - 1:
        count, power = count / 1000, power + 1
    return f"{count:.1f}".removesuffix(".0") + f" {units[power]}"
