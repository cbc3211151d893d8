"""Frames through threads, shared by video files and `anonyface live`.

A `Producer` runs an iterator (decoding) in its own thread into a bounded
queue; a `Consumer` hands items to a function (encoding, muxing) in its own
thread. Each owns its thread, its queue and its errors: an error in the
thread is raised in the caller's thread at the next call, so a failure
anywhere stops the job (and the caller discards its temporary output: fail
closed). PyAV releases the GIL while it decodes and encodes, so the threads
overlap with detection and covering in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

_END = object()


class Producer:
    """Iterates `items` in a thread; the caller iterates the Producer.

    `latest_only`: keep only the newest item, dropping any the caller has not
    taken yet (a camera: never fall behind real time). Otherwise every item is
    delivered, and the thread waits while `maxsize` items are queued (memory
    stays flat however long the video).
    """

    def __init__(self, items: Iterable, maxsize: int = 8, latest_only: bool = False, name: str = "anonyface-decode") -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=1 if latest_only else maxsize)
        self._latest_only = latest_only
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Producer":
        self._thread.start()
        return self

    def _put(self, item: Any) -> bool:
        if self._latest_only and item is not _END:
            try:
                self._queue.get_nowait()  # drop the stale item
            except queue.Empty:
                pass
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._latest_only and item is _END:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set() or not self._put(item):
                    return
        except BaseException as e:  # handed to the caller's thread
            self.error = e
        self._put(_END)

    def get(self, timeout: float | None = None) -> Any:
        """The next item; raises StopIteration at the end, the thread's error if it
        failed, TimeoutError when nothing came for `timeout` seconds."""
        waited = 0.0
        while True:
            try:
                item = self._queue.get(timeout=0.2)
                break
            except queue.Empty:
                waited += 0.2
                if self.error is not None and not self._thread.is_alive():
                    raise self.error
                if timeout is not None and waited >= timeout:
                    raise TimeoutError(f"nothing for {timeout:g} s") from None
        if item is _END:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (it ends at its next item) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class Consumer:
    """Hands every item `put` to `handle` in a thread, in order; `finish` runs after the last.

    `put` blocks while `maxsize` items wait, and raises the thread's error if it
    failed; `close` waits for the thread to drain the queue and raises its error.
    """

    def __init__(self, handle: Callable[[Any], None], finish: Callable[[], None] | None = None, maxsize: int = 8, name: str = "anonyface-encode") -> None:
        self._handle = handle
        self._finish = finish
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Consumer":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if item is _END:
                    break
                if self._stop.is_set():
                    return
                self._handle(item)
            if self._finish is not None:
                self._finish()
        except BaseException as e:  # handed to the caller's thread
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: Any) -> None:
        while True:
            self.check()
            if not self._thread.is_alive():
                raise RuntimeError("the encoder stopped")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is handled and `finish` has run; raise the thread's error."""
        if self._thread.is_alive():
            self.put(_END)
            self._thread.join()
        self.check()

    def abort(self, timeout: float = 5.0) -> None:
        """Stop without finishing (the output is about to be discarded)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
