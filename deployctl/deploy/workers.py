"""A thread pool for deploy's concurrent reads and rollouts that never holds up a Ctrl-C.

`with ThreadPoolExecutor()` waits for its workers on the way out, so an interrupt raised inside it would wait
for a rollout to finish. Here an interrupt asks every worker to stop at its next wait (interrupt.request: every
wait of theirs sleeps through deployctl.interrupt), cancels what has not started, and leaves at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from deployctl import interrupt


@contextmanager
def pool(size: int) -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=max(1, size))
    try:
        yield executor
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            interrupt.request()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
