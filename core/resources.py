"""How much memory the machine has free, so that jobs whose size a file declares (a pose file's
frame count, say) can be refused with a clear message before anything is allocated, instead of
failing halfway in the allocator or pushing the machine into swap."""

from __future__ import annotations

import os
import sys

from .errors import InsufficientMemoryError


def available_memory() -> int | None:
    """Bytes of physical memory free for a new allocation without swapping, or None when this
    system does not say. Linux: MemAvailable (free plus reclaimable caches); Windows:
    GlobalMemoryStatusEx; other systems: free pages where sysconf knows them."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    if sys.platform == "win32":
        return _windows_available_memory()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _windows_available_memory() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.ullAvailPhys)


def format_bytes(count: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show sizes)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_memory(needed: int, job: str) -> None:
    """Refuse a job that needs more than the free memory (InsufficientMemoryError naming the job and
    both sizes); nothing is refused where the system does not say how much is free."""
    available = available_memory()
    if available is not None and needed > available:
        raise InsufficientMemoryError(f"{job} needs about {format_bytes(needed)} of memory, but only "
                                      f"{format_bytes(available)} is free")
