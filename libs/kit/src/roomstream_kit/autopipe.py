"""Appends issued concurrently, sent to Redis as one pipeline (the HTTP publish API's batches).

`AutoPipeline` gives `EventLog` a `ScriptRunner` and a `CommandRunner` that do not send a command
at once: every call made in the same turn of the event loop is queued, and the queue goes out as
one redis-py pipeline (`transaction=False`: Redis answers in order, nothing is atomic across
calls; each append script is atomic on its own). So `asyncio.gather` of N `EventLog.append`
calls costs about three round trips (the id bindings, the scripts, the releases of refused ids)
instead of 2·N, and the append stays the one definition in `EventLog` / `APPEND_SCRIPT`.

Errors: an error reply fails only its own call (redis-py's exception for it); a lost connection
fails every call of that flush with redis-py's `ConnectionError` (`unavailable`): the caller
retries with the same client message ids, which the script deduplicates. A Redis Cluster keeps
redis-py's own calls (`EventLog` without runners): a cluster pipeline routes EVALSHA per slot.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from roomstream_contracts.streams import APPEND_SCRIPT

_Call = tuple[str, tuple[Any, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Queue of the calls made in one loop turn, flushed as one pipeline."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._sha = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()
        self._loaded = False
        self._queue: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def script(self, keys: list[str], args: list[str | bytes | int]) -> Any:
        """`ScriptRunner`: the append script, in the next flush."""
        return await self._enqueue("script", (keys, args))

    async def command(self, *args: Any) -> Any:
        """`CommandRunner`: one plain command, in the next flush."""
        return await self._enqueue("command", args)

    async def _enqueue(self, what: str, args: tuple[Any, ...]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._queue:
            # The flush runs after every callback already scheduled for this turn.
            task = asyncio.create_task(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        self._queue.append((what, args, future))
        return await future

    async def _flush(self) -> None:
        calls, self._queue = self._queue, []
        try:
            replies = await self._execute(calls)
            if any(isinstance(r, NoScriptError) for r in replies):
                # The server lost its scripts (restart, SCRIPT FLUSH): EVALSHA ran nothing, so
                # loading the script and sending those calls again doubles nothing.
                self._loaded = False
                again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                for i, reply in zip(
                    again, await self._execute([calls[i] for i in again]), strict=True
                ):
                    replies[i] = reply
        except BaseException as exc:
            for _, _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(calls, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """One pipeline of `calls`; error replies in place. The script is loaded once (SCRIPT
        LOAD), not checked before every pipeline as redis-py's pipeline scripts are."""
        if not self._loaded and any(what == "script" for what, _, _ in calls):
            await self.redis.script_load(APPEND_SCRIPT)
            self._loaded = True
        async with self.redis.pipeline(transaction=False) as pipe:
            for what, args, _ in calls:
                if what == "script":
                    keys, argv = args
                    pipe.evalsha(self._sha, len(keys), *keys, *argv)
                elif args[0] == "SET":  # SET ... GET: the old value, not a bool
                    pipe.execute_command(*args, get=True)
                else:
                    pipe.execute_command(*args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
