"""Huge pages for the loaded model (``cedarkey.server.memory``): which mappings are advised, and that
collapsing them keeps every byte and really yields huge pages where the kernel offers them."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from cedarkey.server.memory import HUGE_PAGE, _mappings, use_huge_pages

MAPS = """\
55d0c0000000-55d0c0a00000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
7f0000400000-7f0000401000 ---p 00000000 00:00 0
7f0000401000-7f0000c01000 rw-p 00000000 00:00 0
7f1000000000-7f1000800000 r--p 00000000 08:01 1234                       /usr/lib/libfoo.so
7f2000000000-7f2000800000 rw-p 00000000 08:01 1234                       /usr/lib/libfoo.so
7f3000000000-7f3000100000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00800000 rw-p 00000000 00:00 0                          [stack]
7ffd10000000-7ffd10800000 rw-s 00000000 00:05 77                         /dev/shm/x
"""


def test_only_private_anonymous_writable_mappings_are_advised_in_whole_huge_pages() -> None:
    assert _mappings(MAPS) == [
        (0x55D0C0000000, 0x55D0C0A00000),  # the brk heap
        (0x7F0000000000, 0x7F0000400000),  # anonymous, aligned
        (0x7F0000600000, 0x7F0000C00000),  # anonymous, trimmed to 2 MiB boundaries
    ]  # not: file-backed, read-only, shared, the stack, or anonymous but under 2 MiB


def _collapse_offered() -> bool:
    """Whether this kernel can collapse memory into huge pages: THP not ``never`` and MADV_COLLAPSE (6.1+)."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not sys.platform.startswith("linux") or not path.exists() or "[never]" in path.read_text():
        return False
    major, minor = (int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    return (major, minor) >= (6, 1)


def _anon_huge_kib() -> int:
    rollup = Path("/proc/self/smaps_rollup")
    if not rollup.exists():
        return 0
    for line in rollup.read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("no AnonHugePages line")


def test_collapse_keeps_the_bytes_and_gives_huge_pages_where_the_kernel_offers_them() -> None:
    """Where the kernel offers collapsing (as on the machines this project runs on) the block really ends
    up on huge pages; elsewhere the call is a harmless no-op. Either way every byte survives."""
    block = bytearray(64 << 20)  # well above malloc's mmap threshold: an anonymous mapping of its own
    for i in range(0, len(block), 4096):
        block[i] = i // 4096 % 251
    before = _anon_huge_kib()
    pages = use_huge_pages()
    assert all(block[i] == i // 4096 % 251 for i in range(0, len(block), 4096))
    if _collapse_offered():
        assert pages.advised >= 32 * HUGE_PAGE
        assert pages.collapsed >= 16 * HUGE_PAGE
        assert _anon_huge_kib() >= before + 16 * (HUGE_PAGE >> 10)
    else:
        assert pages.collapsed == 0


def test_serve_takes_no_huge_pages() -> None:
    from cedarkey.client import cli

    parser = cli.build_parser()
    assert parser.parse_args(["serve", "--no-huge-pages"]).huge_pages is False
    assert parser.parse_args(["serve"]).huge_pages is True
