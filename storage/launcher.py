"""Run a local Orthanc from a generated JSON config, or connect to one.

Why generate the config: Orthanc's defaults are wrong for filmless in a few
ways that matter (Latin-1 default encoding mangles Vietnamese names, no
authentication, any peer may C-STORE straight into it, Nagle's algorithm on
its DICOM port). The generated file fixes those, and an optional JSON file
of overrides is merged last so an admin can still change anything.

Orthanc 1.10 cannot bind to one address, so "localhost only" is enforced by
Orthanc itself: ``RemoteAccessAllowed: false`` refuses HTTP from other
hosts, and its DICOM server is off (``DicomServerEnabled: false``): nothing
in filmless speaks DICOM to Orthanc, and an open port let any local process
calling itself FILMLESS find, get and store around the gateway. When an
admin turns it on (``StorageSettings.dicom_server``, e.g. to compare with a
stock Orthanc), it accepts only the modalities declared in the config
(checked by AE title *and* host, by default just the filmless gateway on
127.0.0.1).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .client import METADATA_KEYS, OrthancStore
from .exceptions import LauncherError
from .settings import StorageSettings

__all__ = ["Credentials", "OrthancProcess", "build_config", "load_or_create_credentials", "open_store"]

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
OVERRIDES_FILE = "orthanc-overrides.json"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_credentials(data_dir: Path) -> Credentials:
    """The managed Orthanc's REST credentials, generated once and kept 0600."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        try:
            raw = json.loads(path.read_text("utf-8"))
            creds = Credentials(str(raw["username"]), str(raw["password"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise LauncherError(f"cannot read Orthanc credentials from {path}: {exc}") from exc
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return creds
    creds = Credentials("filmless", secrets.token_urlsafe(24))
    _write_private(path, json.dumps({"username": creds.username, "password": creds.password}))
    return creds


def _pg_config(dsn: str) -> dict[str, Any]:
    url = urlparse(dsn)
    if url.scheme not in ("postgres", "postgresql"):
        raise LauncherError(f"FILMLESS_ORTHANC_PG_DSN must be a postgresql:// URL, not {dsn!r}")
    config: dict[str, Any] = {
        "EnableIndex": True,
        "EnableStorage": False,
        "Host": url.hostname or "127.0.0.1",
        "Port": url.port or 5432,
        "Database": (url.path or "/orthanc").lstrip("/") or "orthanc",
        "Username": unquote(url.username or "postgres"),
        # Several Orthanc servers may share one index (scale-out); each
        # keeps its own lock-free view. Override with {"PostgreSQL": {"Lock": true}}.
        "Lock": False,
    }
    if url.password:
        config["Password"] = unquote(url.password)
    return config


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    settings: StorageSettings,
    credentials: Credentials,
    gateway_aet: str = "FILMLESS",
    gateway_port: int = 11112,
) -> dict[str, Any]:
    """The Orthanc configuration filmless runs with (a plain dict)."""
    data = settings.data_dir.absolute()
    plugins = [str(settings.plugins_dir / "libOrthancDicomWeb.so"), str(settings.plugins_dir / "libOrthancGdcm.so")]
    config: dict[str, Any] = {
        "Name": "filmless",
        "StorageDirectory": str(data / "storage"),
        "IndexDirectory": str(data / "index"),
        "StorageCompression": False,
        "DefaultEncoding": "Utf8",
        "HttpPort": settings.http_port,
        "DicomServerEnabled": settings.dicom_server,
        "DicomPort": settings.dicom_port,
        "DicomAet": settings.dicom_aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {credentials.username: credentials.password},
        "HttpTimeout": 60,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpThreadsCount": 50,
        "DicomThreadsCount": 4,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomCheckModalityHost": True,
        "DicomCheckCalledAet": False,
        "DicomModalities": {"filmless-gateway": [gateway_aet, "127.0.0.1", gateway_port]},
        "StorageAccessOnFind": "Never",
        "OverwriteInstances": False,
        "StableAge": 10,
        "SaveJobs": False,
        # C-MOVEs are sent by Orthanc as jobs (storage.push): a few run at once.
        "ConcurrentJobs": 4,
        "ExecuteLuaEnabled": False,
        "RestApiWriteToFileSystemEnabled": False,
        "UserMetadata": dict(METADATA_KEYS),
        "Plugins": plugins,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "Gdcm": {"Enable": True},
    }
    if settings.pg_dsn:
        config["Plugins"].append(str(settings.plugins_dir / "libOrthancPostgreSQLIndex.so"))
        config["PostgreSQL"] = _pg_config(settings.pg_dsn)
    overrides = settings.data_dir / OVERRIDES_FILE
    if overrides.exists():
        try:
            config = _merge(config, json.loads(overrides.read_text("utf-8")))
        except ValueError as exc:
            raise LauncherError(f"{overrides} is not valid JSON: {exc}") from exc
    return _merge(config, settings.config_overrides)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class OrthancProcess:
    """The managed Orthanc child process.

    ``start()`` writes the config, starts Orthanc and waits until its REST
    API answers with our credentials; ``stop()`` asks it to shut down (SIGTERM)
    and waits, killing it only if it does not stop in time.
    """

    def __init__(self, settings: StorageSettings, gateway_aet: str = "FILMLESS", gateway_port: int = 11112) -> None:
        if not settings.managed:
            raise LauncherError("OrthancProcess is for the managed Orthanc; an external URL is configured")
        self.settings = settings
        self.gateway_aet = gateway_aet
        self.gateway_port = gateway_port
        self.credentials = load_or_create_credentials(settings.data_dir)
        self.config_path = settings.data_dir / "orthanc.json"
        self.log_path = settings.data_dir / "orthanc.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def store(self) -> OrthancStore:
        return OrthancStore(
            self.settings.url, self.credentials.username, self.credentials.password, self.settings.request_timeout
        )

    def write_config(self) -> Path:
        data = self.settings.data_dir
        for sub in ("storage", "index"):
            (data / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        config = build_config(self.settings, self.credentials, self.gateway_aet, self.gateway_port)
        for plugin in config["Plugins"]:
            if not Path(plugin).exists():
                raise LauncherError(
                    f"Orthanc plugin {plugin} is missing: install the Debian packages "
                    "orthanc-dicomweb orthanc-gdcm (orthanc-postgresql for a PostgreSQL index)"
                )
        # The config holds the REST password: 0600 like the credentials file.
        _write_private(self.config_path, json.dumps(config, indent=2, ensure_ascii=False))
        return self.config_path

    def start(self) -> OrthancStore:
        if self._proc and self._proc.poll() is None:
            return self.store()
        if not self.settings.binary.exists():
            raise LauncherError(f"Orthanc is not installed at {self.settings.binary} (Debian package 'orthanc')")
        ports = [(self.settings.http_port, "HTTP")]
        if self.settings.dicom_server:
            ports.append((self.settings.dicom_port, "DICOM"))
        for port, name in ports:
            if not _port_free(port):
                raise LauncherError(
                    f"port {port} for Orthanc's {name} server is already in use "
                    "(another Orthanc? stop it or choose another port in FILMLESS_ORTHANC_HTTP_PORT / "
                    "FILMLESS_ORTHANC_DICOM_PORT)"
                )
        self.write_config()
        env = dict(os.environ)
        # DCMTK inside Orthanc disables Nagle only when this is set (≈50 ms per
        # C-STORE otherwise); see shared/domain-notes.md.
        env["TCP_NODELAY"] = "1"
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [str(self.settings.binary), str(self.config_path)],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            logfile.close()
        store = self.store()
        deadline = time.monotonic() + self.settings.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LauncherError(
                    f"Orthanc exited with code {self._proc.returncode} at start-up; see {self.log_path}:\n"
                    + self._log_tail()
                )
            if store.ping():
                log.info("orthanc started pid=%s http=%s dicom=%s", self._proc.pid, self.settings.http_port,
                         self.settings.dicom_port if self.settings.dicom_server else "off")
                return store
            time.sleep(0.1)
        self.stop()
        raise LauncherError(f"Orthanc did not answer within {self.settings.startup_timeout:.0f} s; see {self.log_path}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("orthanc did not stop within %.0f s; killing it", timeout)
            proc.kill()
            proc.wait()

    def __enter__(self) -> OrthancStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_store(settings: StorageSettings) -> OrthancStore:
    """A store for the configured Orthanc (managed: credentials from the data dir).

    With ``failover_urls`` (several Orthanc servers on one index) the store
    is a :class:`storage.failover.FailoverStore` over all of them, the
    configured URL first; it has the same methods.
    """
    if settings.managed:
        creds = load_or_create_credentials(settings.data_dir)
        return OrthancStore(settings.url, creds.username, creds.password, settings.request_timeout)
    stores = [
        OrthancStore(url.rstrip("/"), settings.external_username, settings.external_password, settings.request_timeout)
        for url in (settings.url, *settings.failover_urls)
    ]
    if len(stores) == 1:
        return stores[0]
    from .failover import FailoverStore

    # The same interface, duck-typed (every OrthancStore method, through __getattr__).
    return FailoverStore(stores)  # type: ignore[return-value]
