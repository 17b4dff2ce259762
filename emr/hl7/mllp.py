"""The MLLP listener the HIS sends to, and the MLLP client ORU^R01 goes out with (python-hl7's asyncio streams).

MLLP framing (HL7 v2.5 Appendix C.4.2 / "MLLP release 2"): <VT> message <FS><CR>.
One asyncio loop serves every connection, so a client that sends slowly or
stops half-way holds only its own connection: each message must arrive whole
within ``read_timeout`` and within ``max_bytes`` or the connection is closed and
the attempt logged. Addresses outside ``FILMLESS_HL7_ALLOWED`` are closed before
anything is read; one address may hold ``connections_per_ip`` connections.
Messages are applied by one worker thread (the database work is blocking), in
arrival order across connections; on one connection the ACK of a message is
written before the next is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hl7.mllp import InvalidBlockError, open_hl7_connection, start_hl7_server
from sqlalchemy.orm import Session

from emr.core.settings import EmrSettings

from .inbound import Outcome, peer_allowed, process, refuse_connection

__all__ = ["Listener", "start_listener", "serve_hl7", "send_mllp", "MllpError"]

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 60.0  # seconds between two logged refusals of one address for one reason


class MllpError(Exception):
    """The receiver could not be reached, closed the connection or did not answer in time."""


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if not info:
        return "?"
    host, port = info[0], info[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Listener:
    """The running MLLP server; ``port`` is the bound port (useful when 0 was asked for)."""

    settings: EmrSettings
    session_factory: Callable[[], Session]
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._refused: dict[tuple[str, str], float] = {}
        # One worker applies messages, in arrival order across connections: an A08 must not overtake the
        # A04 it updates, and two registrations of one new HIS number must not both create a patient.
        # Reading and answering stay concurrent (the event loop); only the database work queues.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7")
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None

    def open_connections(self, ip: str) -> int:
        """How many connections ``ip`` holds now (a closed one counts until its handler has finished)."""
        return self._open[ip]

    # -- database work (in the pool) -----------------------------------------------------
    def _apply(self, raw: bytes, peer: str) -> Outcome:
        with self.session_factory() as session:
            return process(session, raw, peer=peer, settings=self.settings.hl7,
                           facility_code=self.settings.facility_code, stations=self.settings.modality_stations)

    def _refuse(self, peer: str, reason: str, raw: bytes = b"") -> None:
        """Log and audit a refused attempt; the same address and reason at most once a minute
        (a port scan or a reconnecting broken client must not fill the database)."""
        key = (peer.rsplit(":", 1)[0], reason)
        now = time.monotonic()
        if now - self._refused.get(key, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
            return
        self._refused[key] = now
        if len(self._refused) > 10_000:
            self._refused.clear()
        try:
            with self.session_factory() as session:
                refuse_connection(session, peer, reason, raw)
        except Exception:  # noqa: BLE001 - logging a refusal must not take the listener down
            log.exception("could not log refused HL7 connection from %s", peer)

    async def _in_pool(self, fn: Callable[..., object], *args: object) -> object:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._pool, fn, *args)

    # -- connections ---------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.settings.hl7
        peer = _peer(writer)
        ip = peer.rsplit(":", 1)[0].strip("[]")
        if not peer_allowed(cfg, ip):
            log.warning("HL7 connection from %s refused: address not allowed", peer)
            await self._in_pool(self._refuse, peer, "address not in FILMLESS_HL7_ALLOWED")
            writer.close()
            return
        if self._open[ip] >= cfg.connections_per_ip or sum(self._open.values()) >= cfg.max_connections:
            log.warning("HL7 connection from %s refused: too many connections", peer)
            await self._in_pool(self._refuse, peer, "too many connections from this address")
            writer.close()
            return
        self._open[ip] += 1
        try:
            await self._serve(reader, writer, peer)
        finally:
            self._open[ip] -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        cfg = self.settings.hl7
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), cfg.read_timeout)  # type: ignore[attr-defined]
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await self._in_pool(self._refuse, peer, "connection closed in the middle of a message",
                                        exc.partial[:4096])
                return
            except TimeoutError:
                if reader._buffer:  # type: ignore[attr-defined]  # half a message: a slow or stuck client
                    await self._in_pool(self._refuse, peer,
                                        f"no complete message within {cfg.read_timeout:.0f} s",
                                        bytes(reader._buffer[:4096]))  # type: ignore[attr-defined]
                return
            except ValueError:
                await self._in_pool(self._refuse, peer, f"message larger than {cfg.max_bytes} bytes")
                return
            except InvalidBlockError:
                await self._in_pool(self._refuse, peer, "MLLP framing error: a block must start with <VT>")
                return
            except (ConnectionError, OSError):
                return
            outcome = await self._in_pool(self._apply, bytes(block), peer)
            assert isinstance(outcome, Outcome)
            writer.writeblock(outcome.ack)  # type: ignore[attr-defined]
            try:
                await asyncio.wait_for(writer.drain(), cfg.read_timeout)
            except (TimeoutError, ConnectionError, OSError):
                return

    # -- life cycle ----------------------------------------------------------------------
    async def _main(self) -> None:
        cfg = self.settings.hl7
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await start_hl7_server(self._client, cfg.host, self.port or cfg.port, limit=cfg.max_bytes)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # an asyncio.Server
        log.info("HL7 MLLP listener on %s:%d", cfg.host, self.port)
        self._ready.set()
        if threading.current_thread() is threading.main_thread():  # `filmless hl7 serve`: stop cleanly on SIGTERM
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        self._server.close()
        await self._server.wait_closed()

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._pool.shutdown(wait=True)
            self._ready.set()

    def start(self) -> Listener:
        self._thread = threading.Thread(target=self.serve_forever, name="hl7-listener", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._server is None:
            raise RuntimeError("the HL7 listener did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(15)


def start_listener(settings: EmrSettings, session_factory: Callable[[], Session], *, port: int | None = None
                   ) -> Listener:
    """Start the listener in a background thread (tests, or embedding); ``port=0`` picks a free one."""
    listener = Listener(settings, session_factory, port=settings.hl7.port if port is None else port)
    return listener.start()


def _schema_current(engine: Any) -> bool:
    """Is the database at the newest Alembic revision? (The EMR process migrates; this one only waits:
    two processes migrating one SQLite file at the same start-up would race.)"""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from emr.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads()) == heads
    except Exception:  # noqa: BLE001 - database not reachable yet: not current
        return False


def serve_hl7(settings: EmrSettings, *, wait_for_schema: float = 600.0) -> None:
    """Run the listener in the foreground until SIGTERM/SIGINT (``filmless hl7 serve``, a ``filmless up`` part).

    It starts once the EMR has brought the database to the newest schema (``filmless up`` starts both)."""

    from emr.core.clock import use_timezone
    from emr.db import make_engine, make_session_factory

    use_timezone(settings.timezone)
    engine = make_engine(settings.database_url)
    try:
        deadline = time.monotonic() + wait_for_schema
        while not _schema_current(engine):
            if time.monotonic() > deadline:
                raise RuntimeError("the EMR database is not migrated: start the EMR (filmless up / filmless emr serve)")
            log.info("waiting for the EMR to migrate the database")
            time.sleep(1.0)
        Listener(settings, make_session_factory(engine)).serve_forever()
    finally:
        engine.dispose()


async def _send(host: str, port: int, data: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, limit=4 * 1024 * 1024), timeout)
    try:
        writer.writeblock(data)
        await asyncio.wait_for(writer.drain(), timeout)
        return bytes(await asyncio.wait_for(reader.readblock(), timeout))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def send_mllp(address: str, data: bytes, timeout: float = 30.0) -> bytes:
    """Send one framed message to host:port and return the raw acknowledgement."""
    host, _, port = address.rpartition(":")
    try:
        return asyncio.run(_send(host.strip("[]"), int(port), data, timeout))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, InvalidBlockError, ValueError) as exc:
        raise MllpError(f"{address}: {type(exc).__name__}: {exc}") from exc
