"""Sends the Redis commands that concurrent greenlets issue at the same moment as one pipeline.

A gevent worker serves many requests at once. Sent one by one, every script call checks a
connection out of the pool (with a readiness poll), makes its own send and its own receive:
under load those system calls cost more than the script itself. Here the first caller wakes a
flusher greenlet; whatever the other greenlets queue while it waits on Redis goes out in the next
round-trip, together. Each caller still gets exactly its own reply or its own error.
"""

from __future__ import annotations

from typing import Any

import redis
from gevent import spawn
from gevent.event import AsyncResult

_MAX_BATCH = 512


class Batcher:
    def __init__(self, client: redis.Redis):
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], AsyncResult]] = []
        self._flushing = False

    def execute_command(self, *command: Any) -> Any:
        reply = AsyncResult()
        self._queue.append((command, reply))
        if not self._flushing:
            self._flushing = True
            spawn(self._flush)
        return reply.get()

    def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
                self._send(batch)
        finally:
            self._flushing = False

    def _send(self, batch: list[tuple[tuple[Any, ...], AsyncResult]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for command, _ in batch:
            pipe.execute_command(*command)
        try:
            replies = pipe.execute(raise_on_error=False)
        except BaseException as error:  # the connection failed: every caller hears it
            for _, reply in batch:
                reply.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set(value)


def under_gevent() -> bool:
    """True in a gunicorn gevent worker (sockets patched); elsewhere calls go straight out."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")
