"""Settings for the storage package: where Orthanc lives and how to reach it.

The package never reads the environment itself; ``filmless.settings`` builds
this dataclass from ``FILMLESS_*`` variables and passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StorageSettings"]


@dataclass(frozen=True)
class StorageSettings:
    """How to run (or reach) Orthanc.

    With ``external_url`` unset, filmless runs its own Orthanc child process
    from ``binary`` with a config generated into ``data_dir``; otherwise it
    only connects to the Orthanc at that URL.
    """

    data_dir: Path = Path("var/orthanc")
    http_host: str = "127.0.0.1"
    http_port: int = 8042
    dicom_host: str = "127.0.0.1"
    dicom_port: int = 4242
    dicom_aet: str = "ORTHANC"
    # Orthanc's own DICOM server (C-ECHO/C-FIND/C-GET/C-STORE SCP). Off:
    # filmless reaches Orthanc only over its authenticated localhost REST API
    # (the gateway forwards with HTTP, storage commitment asks over HTTP), so
    # an open DICOM port would only let local processes around the gateway's
    # access rules and audit. ``dicom_port`` is used only when this is on.
    dicom_server: bool = False
    external_url: str | None = None
    external_username: str | None = None
    external_password: str | None = None
    # More Orthanc servers on the same index (scale-out): used, in this order,
    # while ``external_url`` cannot be reached (see storage.failover).
    failover_urls: tuple[str, ...] = ()
    pg_dsn: str | None = None
    binary: Path = Path("/usr/sbin/Orthanc")
    plugins_dir: Path = Path("/usr/share/orthanc/plugins")
    startup_timeout: float = 60.0
    request_timeout: float = 60.0
    # Extra keys merged last into the generated JSON config (everything is
    # overridable, as in Orthanc itself).
    config_overrides: dict[str, object] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """True when filmless starts Orthanc itself."""
        return self.external_url is None

    @property
    def url(self) -> str:
        if self.external_url:
            return self.external_url.rstrip("/")
        return f"http://{self.http_host}:{self.http_port}"
