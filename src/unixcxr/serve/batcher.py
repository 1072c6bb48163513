"""Bounded, batching request queue in front of one model.

One worker thread owns the model, so concurrent requests never run the network at the same time
(and never fight over memory). Requests wait in a bounded queue (a full queue is refused at once,
never silently dropped); whenever the worker is free it takes everything waiting, up to
max_batch, and runs requests that share the same settings as ONE batched call. Under load the
batches grow by themselves; an idle server answers a lone request without waiting.

A batch that fails is run again one request at a time, so a failure answers only the request
that caused it: the others get their results (the retry costs time only when something failed)."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

EXCLUSIVE = object()  # key of a job that runs alone: payload is a callable (token streaming)


class QueueFull(RuntimeError):
    """The request queue is at its bound; the caller should answer 'busy, retry'."""


@dataclass
class _Job:
    key: Hashable
    payload: object
    future: Future = field(default_factory=Future)


class Batcher:
    """run_batch(key, payloads) -> results, one per payload, in order."""

    def __init__(self, run_batch: Callable[[Hashable, list], list], max_batch: int, max_queue: int):
        self.run_batch, self.max_batch = run_batch, max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._loop, name="unixcxr-model", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, key: Hashable, payload: object) -> Future:
        job = _Job(key, payload)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    def run_alone(self, fn: Callable[[], object]) -> Future:
        """Run fn() in the model thread with nothing else beside it."""
        return self.submit(EXCLUSIVE, fn)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs = [job]
            while len(jobs) < self.max_batch:  # take what is waiting now, never wait for more
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this round
                    break
                jobs.append(nxt)
            groups: dict[Hashable, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(id(j) if j.key is EXCLUSIVE else j.key, []).append(j)
            for group in groups.values():
                self._run([j for j in group if j.future.set_running_or_notify_cancel()])

    def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        try:
            if jobs[0].key is EXCLUSIVE:
                results = [jobs[0].payload()]
            else:
                results = self.run_batch(jobs[0].key, [j.payload for j in jobs])
        except BaseException as err:  # the worker lives on
            if len(jobs) > 1 and isinstance(err, Exception):  # whose request was it? each alone tells
                for j in jobs:
                    self._run([j])
                return
            for j in jobs:
                j.future.set_exception(err)
            return
        for j, result in zip(jobs, itertools.chain(results, itertools.repeat(None))):
            j.future.set_result(result)
