"""Memory tuning for long CPU runs: glibc's allocator kept from returning every freed batch to the
kernel (and trimmed when its heap creeps), and the peak resident memory that commands report."""

from __future__ import annotations

import functools
import os
import resource


@functools.cache
def _glibc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator's own defaults apply
        return None


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning it to the kernel.

    By default every large block (a batch's activations) is mmap'ed and unmapped again, so each batch
    faults its pages in afresh and a good part of the time goes to the kernel; keeping the memory
    removes those faults (docs/measured-notes.md). The kept heap fragments, so the
    extraction loop trims it when it creeps (`KeptHeap`). PyTorch's CPU tuning guide gets the same
    from jemalloc/tcmalloc; this needs no extra library.
    """
    libc = _glibc()
    if libc is not None:
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 1 << 30)


def one_heap_for_threads() -> None:
    """Let threads started from now on allocate from the process's main heap (glibc's arenas: at most one).

    By default each new thread gets a heap of its own, which the kept-heap settings above do not reach
    as well: a block beyond its 64 MB size is mapped and unmapped afresh, and what a thread frees is kept
    for that thread alone. The SVM's fitting threads allocate a fold's coordinates per fit; sharing the
    main heap made a stage's splits faster and smaller (docs/measured-notes.md).
    """
    libc = _glibc()
    if libc is not None:
        m_arena_max = -8
        libc.mallopt(m_arena_max, 1)


def release_freed_memory() -> None:
    """Hand the free pages inside the kept heap back to the kernel (glibc's malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _resident_mb() -> float | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # not Linux: glibc's settings were not changed either
        return None


class KeptHeap:
    """Trims the kept heap (`keep_freed_memory`) whenever it grows past what the first batch needed.

    A batch's activations come back freed and are reused by the next batch, so the resident memory
    after the first batch is what the extraction needs; trimming when nothing grew would only cost
    page faults. But the heap fragments and creeps: a smaller last batch, or a small block left
    between freed activations, makes the next large request miss every hole, and the memory grows
    batch after batch. So the resident memory is held to the first batch's level plus ``slack_mb``:
    trimmed whenever it goes beyond (docs/measured-notes.md).
    """

    def __init__(self, slack_mb: float = 256) -> None:
        self.slack_mb = slack_mb
        self.level: float | None = None

    def after_batch(self) -> None:
        resident = _resident_mb()
        if resident is None:
            return
        if self.level is None:
            self.level = resident
        elif resident > self.level + self.slack_mb:
            release_freed_memory()


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # loader workers, once joined
    return max(own, children) / 1024
