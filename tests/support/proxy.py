"""A TCP proxy that a test can cut and restore: "Postgres goes away" without stopping the shared
server. While cut, new connections are refused and open ones are dropped. In front of Redis it
can also silence the pub/sub connections open now (`stall_pubsub`): they stay open but carry
nothing any more, either way — a link that looks alive but is dead (a peer or NAT entry gone)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from tests.support.processes import free_port


class CuttableProxy:
    def __init__(self, listen_port: int, target_host: str, target_port: int) -> None:
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pubsub: set[asyncio.StreamWriter] = set()
        """Both ends of each connection whose client sent a (S)SUBSCRIBE."""
        self._muted: set[asyncio.StreamWriter] = set()

    @classmethod
    async def before_postgres(cls, database_url: str) -> tuple[CuttableProxy, str]:
        """A started proxy on a free port in front of `database_url`'s server, and the URL of the
        same database through it (what a service under test is given)."""
        parts = urlsplit(database_url)
        proxy = cls(free_port(), parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        user = parts.username or "postgres"
        return proxy, urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{proxy.listen_port}"))

    @classmethod
    async def before_redis(cls, redis_url: str) -> tuple[CuttableProxy, str]:
        """A started proxy on a free port in front of `redis_url`'s server ("Redis goes away" for
        one service only), and the Redis URL through it."""
        target = urlsplit(redis_url)
        proxy = cls(free_port(), target.hostname or "127.0.0.1", target.port or 6379)
        await proxy.start()
        return proxy, urlunsplit(target._replace(netloc=f"127.0.0.1:{proxy.listen_port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, reuse_address=True
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if pair is not None and b"SUBSCRIBE" in data.upper():
                    self._pubsub.update(pair)
                if writer in self._muted:
                    continue  # silenced: the bytes go nowhere, the connection stays open
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, (writer, up_writer)), self._pipe(up_reader, writer)
            )
        finally:
            self._writers -= {writer, up_writer}
            self._pubsub -= {writer, up_writer}
            self._muted -= {writer, up_writer}

    async def cut(self) -> None:
        """Stop listening and drop every open connection (both directions)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 0.5)
            self._server = None
        for w in list(self._writers):
            transport = w.transport
            transport.abort()
        self._writers.clear()

    def stall_pubsub(self) -> int:
        """Silence the pub/sub connections open now (new ones work); how many ends."""
        self._muted |= self._pubsub
        return len(self._pubsub)

    async def restore(self) -> None:
        await self.start()
