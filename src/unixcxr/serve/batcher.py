"""Bounded, batching request queue in front of one model.

One worker thread owns the model, so concurrent requests never run the network at the same time
(and never fight over memory). Requests wait in a bounded queue (a full queue is refused at once,
never silently dropped); whenever the worker is free it takes everything waiting, up to
max_batch, and runs requests that share the same settings as ONE batched call. Under load the
batches grow by themselves; an idle server answers a lone request without waiting.

A batch that fails is run again one request at a time, so a failure answers only the request
that caused it: the others get their results (the retry costs time only when something failed).

With `rows` (a RowEngine: continuous batching, serve/rows.py), the jobs it accepts do not wait for a
batch to end: between two of its decode steps the worker admits what has arrived since, and every
job leaves with its answer the step it is done."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

EXCLUSIVE = object()  # key of a job that runs alone: payload is a callable (token streaming)


class QueueFull(RuntimeError):
    """The request queue is at its bound; the caller should answer 'busy, retry'."""


@dataclass
class _Job:
    key: Hashable
    payload: object
    future: Future = field(default_factory=Future)


class RowEngine(Protocol):
    """Continuous batching: rows join between steps and leave when done."""

    max_rows: int
    active: int

    def accepts(self, key: Hashable) -> bool: ...

    def admit(self, payloads: list, futures: list[Future]) -> None: ...  # raises if a payload is bad

    def step(self) -> list[tuple[Future, object]]: ...  # the rows finished by this step, with results

    def abort(self) -> list[Future]: ...  # drop every running row (after a failed step)


class Batcher:
    """run_batch(key, payloads) -> results, one per payload, in order."""

    def __init__(self, run_batch: Callable[[Hashable, list], list], max_batch: int, max_queue: int,
                 rows: RowEngine | None = None):
        self.run_batch, self.max_batch, self.rows = run_batch, max_batch, rows
        self._pending: list[_Job] = []  # accepted by `rows` but waiting for a free row
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

    def _take(self, block: bool) -> tuple[list[_Job], bool]:
        """What is waiting now (blocking for the first job only when `block`), up to max_batch;
        and whether the queue asked to stop."""
        jobs: list[_Job] = []
        while len(jobs) < self.max_batch:  # take what is waiting now, never wait for more
            try:
                nxt = self._queue.get() if block and not jobs else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return jobs, True
            jobs.append(nxt)
        return jobs, False

    def _loop(self) -> None:
        stopping = False
        while not stopping or self._pending or (self.rows is not None and self.rows.active):
            busy = bool(self._pending) or (self.rows is not None and self.rows.active > 0)
            jobs, stop = self._take(block=not busy and not stopping) if not stopping else ([], False)
            stopping = stopping or stop
            groups: dict[Hashable, list[_Job]] = {}
            for j in jobs:
                if self.rows is not None and j.key is not EXCLUSIVE and self.rows.accepts(j.key):
                    self._pending.append(j)
                else:
                    groups.setdefault(id(j) if j.key is EXCLUSIVE else j.key, []).append(j)
            for group in groups.values():
                self._run([j for j in group if j.future.set_running_or_notify_cancel()])
            if self.rows is not None:
                self._admit()
                self._step()

    def _admit(self) -> None:
        free = self.rows.max_rows - self.rows.active
        joining, self._pending = self._pending[:free], self._pending[free:]
        joining = [j for j in joining if j.future.set_running_or_notify_cancel()]
        if not joining:
            return
        try:
            self.rows.admit([j.payload for j in joining], [j.future for j in joining])
        except Exception:  # whose request was it? each alone tells
            for j in joining:
                try:
                    self.rows.admit([j.payload], [j.future])
                except Exception as err:
                    j.future.set_exception(err)

    def _step(self) -> None:
        if not self.rows.active:
            return
        try:
            finished = self.rows.step()
        except Exception as err:  # the running rows cannot go on; the worker does
            for future in self.rows.abort():
                future.set_exception(err)
            return
        for future, result in finished:
            future.set_result(result)

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
