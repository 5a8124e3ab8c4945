"""A Redis command sent now whose reply is read later: the caller works while Redis answers.

Why: a one-item job's chunk waited for its start script before running its item; on a loaded
2-core machine that wait is a context switch to redis-server and back, a third of the task's wall
time (docs/performance.md, issue 19). The command goes out on a connection of the client's own
pool, held until ``reply()``. Any failure (a lost connection, a Redis that forgot the script, an
error reply) makes ``reply()`` return None: the caller then makes the ordinary, retried call, so
the command must be safe to run twice.
"""

from __future__ import annotations

from typing import Any

import redis


class PendingReply:
    """``send_command`` now, ``read_response`` in :meth:`reply` (call it exactly once)."""

    def __init__(self, client: redis.Redis, *args: Any):
        self._pool = client.connection_pool
        self._conn: Any = None
        try:
            conn = self._pool.get_connection()
        except (redis.RedisError, OSError):
            return
        try:
            conn.send_command(*args)
        except BaseException:
            self._drop(conn)
            return
        self._conn = conn

    def reply(self) -> Any | None:
        """The command's raw reply, or None when it must be made again the ordinary way."""
        conn, self._conn = self._conn, None
        if conn is None:
            return None
        try:
            response = conn.read_response()
        except redis.ResponseError:  # the connection is in step; the ordinary call reports the error
            self._pool.release(conn)
            return None
        except (redis.RedisError, OSError):
            self._drop(conn)
            return None
        except BaseException:  # interrupted mid-read (a time limit): the reply may still be on the wire
            self._drop(conn)
            raise
        self._pool.release(conn)
        return response

    def _drop(self, conn: Any) -> None:
        conn.disconnect()
        self._pool.release(conn)
