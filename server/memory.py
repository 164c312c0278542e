"""Huge pages for the loaded model: the server's heap backed by 2 MiB pages instead of 4 KiB ones.

A decision touches a few dozen scattered objects (the caller's memo, its rule groups, a pre-parsed policy
handle, its entities). With 100,000 rules the engine holds over a gigabyte of them, so each of those touches
is likely a TLB miss as well as a cache miss; on a virtual machine a TLB miss walks two page tables.
Backing the heap with transparent huge pages removes most of those walks: ``bench/engine.py`` measures
the 100k-rule decision with and without (``us_per_decision_100k_rules_small_pages``).

After the model is loaded, :func:`use_huge_pages` advises every private anonymous writable mapping of the
process (``MADV_HUGEPAGE``: later faults there get huge pages) and asks the kernel to collapse what is
already there (``MADV_COLLAPSE``, Linux 6.1+, synchronous: seconds for a large model). Both are advice:
they never change what memory holds, fail harmlessly (old kernels, ``transparent_hugepage=never``, other
systems) and are skipped with ``cedarkey serve --no-huge-pages``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from dataclasses import dataclass

log = logging.getLogger("cedarkey.server")

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20


@dataclass(frozen=True)
class HugePages:
    advised: int  # bytes advised (MADV_HUGEPAGE)
    collapsed: int  # bytes the kernel collapsed into huge pages (MADV_COLLAPSE succeeded)


def _mappings(maps: str) -> list[tuple[int, int]]:
    """The 2 MiB-aligned parts of the private anonymous writable mappings in ``/proc/self/maps`` text."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start, end = (low + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1), high & ~(HUGE_PAGE - 1)
        if end - start >= HUGE_PAGE:
            ranges.append((start, end))
    return ranges


def use_huge_pages(collapse: bool = True) -> HugePages:
    """Advises (and with ``collapse`` collapses) the process heap into huge pages; Linux only."""
    if not sys.platform.startswith("linux"):
        return HugePages(0, 0)
    try:
        with open("/proc/self/maps") as maps:
            ranges = _mappings(maps.read())
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError as exc:
        log.info("huge pages not used: %s", exc)
        return HugePages(0, 0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = collapsed = 0
    for start, end in ranges:
        if madvise(start, end - start, MADV_HUGEPAGE) == 0:
            advised += end - start
            if collapse and madvise(start, end - start, MADV_COLLAPSE) == 0:
                collapsed += end - start
    return HugePages(advised, collapsed)
