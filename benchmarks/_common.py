"""Shared helpers of the benchmark scripts: the ``--quick`` flag, repeated timing with min/median/max, and JSON +
markdown output."""
import json
import os
import statistics
import sys
import time

import torch

#: help text of every script's ``--quick`` flag.
QUICK_HELP = ('a few seconds: tiny inputs and one timed round, to check that the script runs '
              '(tests/test_benchmarks.py); its numbers mean nothing')


def set_threads(n=2):
    """Pin torch to ``n`` intra-op threads (the benchmarks' reference machine has 2 cores)."""
    torch.set_num_threads(n)
    os.environ.setdefault('OMP_NUM_THREADS', str(n))


def steady_malloc():
    """Keep freed memory in the process (glibc only): large tensors stop costing page faults on every allocation.

    With glibc's defaults every tensor above the (adaptive) mmap threshold, and the heap's top above the trim
    threshold, goes back to the kernel when freed, so the next forward page-faults it in again; which allocations
    do depends on what ran before, and that made the same convolution take anywhere from 17 to 37 ms. Raising
    the mmap, trim and top-pad settings to 256 MiB / 1 GiB (what ``MALLOC_MMAP_THRESHOLD_=268435456
    MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456`` set from the shell) gives every case its
    steady state. Returns True if applied (glibc found), else False.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(mallopt(opt, value) == 1 for opt, value in ((m_mmap_threshold, 1 << 28), (m_trim_threshold, 1 << 30),
                                                           (m_top_pad, 1 << 28)))


def add_quick_flag(parser):
    """Add ``--quick`` (:data:`QUICK_HELP`) to a script's argument parser."""
    parser.add_argument('--quick', action='store_true', help=QUICK_HELP)


def spread(values):
    """``min``, ``median``, ``max`` of a list of measurements, and the list itself (``runs``)."""
    return {'min': min(values), 'median': statistics.median(values), 'max': max(values), 'runs': list(values)}


def interleaved(cases, repeats, warmup=1):
    """Time every callable of ``cases`` (name -> fn) once per round, in order, so slow phases of a shared machine
    hit all cases alike; ``warmup`` untimed rounds first.

    Returns:
        tuple[dict, dict]: name -> seconds per timed round, by the wall clock and by process CPU time.
    """
    wall, cpu = {name: [] for name in cases}, {name: [] for name in cases}
    for rnd in range(warmup + repeats):
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if rnd >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return wall, cpu


def timeit(fn, repeats=5, warmup=1):
    """Call ``fn`` ``warmup`` times, then ``repeats`` times; return min/median/max seconds and the raw list."""
    return spread(interleaved({'fn': fn}, repeats, warmup)[0]['fn'])


def document(name, results):
    """The JSON document of a benchmark: ``benchmark`` (``name``), ``torch``, ``threads``, then ``results``."""
    return {'benchmark': name, 'torch': torch.__version__, 'threads': torch.get_num_threads(), **results}


def emit(name, results, rows, columns):
    """Print ``results`` as one JSON document, then ``rows`` (list of dicts) as a markdown table of ``columns``.

    Args:
        name (str): Benchmark name, the JSON's ``benchmark`` key.
        results (dict): Everything measured, JSON-serialisable.
        rows (list[dict]): One dict per table row.
        columns (list[str]): Keys of ``rows`` to show, in order.
    """
    from interir_plugin.utils.tables import markdown_table  # here: the parents of child-process benchmarks stay light

    json.dump(document(name, results), sys.stdout, indent=1, default=float)
    print('\n')
    cells = [[f'{row[c]:.4g}' if isinstance(row[c], float) else row[c] for c in columns] for row in rows]
    print('\n'.join(markdown_table(columns, cells)))
