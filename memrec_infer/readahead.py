"""Run an iterator in a background thread, a few items ahead of its consumer.

Scoring reads and decodes batch ``i + 1`` while the caller scores batch ``i``. Parquet decoding
(pyarrow), the Numba kernels and ONNX Runtime all release the GIL, so the two threads really run
at once; the bounded queue keeps memory bounded (at most ``depth`` items wait).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
# How often a blocked producer re-checks whether the consumer has gone away.
_POLL_SECONDS = 0.1


class _Failure:
    """An exception raised by the producer, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def readahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, produced by a background thread up to ``depth`` ahead.

    An exception raised while producing is re-raised in the consumer, at the position where the
    item would have come. Closing the generator early (``break``, an exception in the consumer,
    ``KeyboardInterrupt``) stops the producer at its next item and waits for it.

    Parameters
    ----------
    items : any iterable; it is iterated only by the background thread
    depth : items produced ahead of the consumer (>= 1)
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="memrec-readahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
