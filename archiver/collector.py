"""The cyclic garbage collector eased while a run works, and while its scoring process does.

One small place for one policy: the run (flows.runs) and the scoring worker (flows.scoring)
both keep a package's recent runs across batches, and both allocate by the million."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

RUN_GC_THRESHOLDS = (50_000, 20, 20)   # gc.set_threshold during a run (Python's default: 700, 10, 10)


@contextlib.contextmanager
def collector_eased() -> Iterator[None]:
    """The cyclic garbage collector eased for the length of a run, and set back as it was when
    the run ends, however it ends (a scheduler or the tests run many syncs in one process).

    A run allocates containers by the million, most of them short-lived or never in a cycle, and
    the anomaly scoring keeps every touched package's recent runs: at Python's default thresholds
    the collector ran 6,000 times in a 100,000-job ingest and its 50 full passes each walked all
    of those kept runs again, 4.7 s of a 37 s ingest (0.5 s of 21 s without scoring). So the
    objects that exist when the run starts (modules, the engine, the table metadata) are left out
    of its passes (gc.freeze; unfreeze hands them back, and a cycle among them that died meanwhile
    goes at the next full pass), and it runs after 50,000 net allocations instead of 700: 6 passes,
    0.08 s, the same peak memory (bench/run.py figure 6). A higher threshold a caller set is kept,
    and a collector switched off stays off. The scoring worker, which keeps those runs instead
    once it takes over, works under the same: at the default thresholds its collector took about
    a fifth of its CPU (11.73 s against 9.07 s for a 100,000-job ingest, medians of 3)."""
    previous = gc.get_threshold()
    gc.freeze()
    if previous[0]:   # 0: automatic collection is off
        gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(RUN_GC_THRESHOLDS, previous)))
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
