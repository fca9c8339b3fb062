"""A TCP proxy on loopback that the test controls: the network between one node and PostgreSQL.

`cut()` is the cable pulled: every open connection is reset at both ends (the node
and the server see their sessions die, as keepalives would make them see on a real
cut; the server ends the node's transactions and frees its row locks), and new
connections are accepted but never answered (they hang like SYNs into the void
until libpq's connect_timeout). `restore()` plugs the cable back in.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self._held.add(writer)  # accepted, never answered
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self.connections += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    if self.is_cut:
                        return
                    sink.write(data)
                    await sink.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                if not self.is_cut:
                    sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pairs.discard(pair)

    def _call(self, func) -> None:  # type: ignore[no-untyped-def]
        async def run() -> None:
            func()
        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def cut(self) -> None:
        def do() -> None:
            self.is_cut = True
            for node_side, server_side in list(self._pairs):
                _reset(node_side)
                _reset(server_side)
            self._pairs.clear()
        self._call(do)

    def restore(self) -> None:
        def do() -> None:
            self.is_cut = False
            for writer in list(self._held):
                _reset(writer)
            self._held.clear()
        self._call(do)

    def stop(self) -> None:
        def do() -> None:
            if self._server is not None:
                self._server.close()
            for node_side, server_side in list(self._pairs):
                node_side.transport.abort()
                server_side.transport.abort()
            for writer in self._held:
                writer.transport.abort()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        try:
            self._call(do)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
