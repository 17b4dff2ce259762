"""Export configuration: facility head code, machine codes (MA_MAY), the facility's signing key.

Kept in ``<data dir>/exports.json`` (written by ``filmless export config``)
rather than in environment variables: machine codes are a per-device table an
administrator maintains, and the key's password lives in its own 0600 file.

``device_codes`` maps a station AE title or a modality to its MA_MAY
(``XX.n.YYYYY.Z``: machine group, funding source, facility code, serial);
an order's own ``device_code`` wins, then its station AE title, then its modality.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emr.core.settings import EmrSettings

__all__ = ["ExportConfig", "TokenKeyConfig", "load_config", "save_config", "CONFIG_NAME"]

CONFIG_NAME = "exports.json"


@dataclass(frozen=True)
class TokenKeyConfig:
    """The facility key on a PKCS#11 token (the same kind of token used for record signing)."""

    library: str
    token_label: str
    key_label: str
    pin_file: Path


@dataclass(frozen=True)
class ExportConfig:
    facility_code: str  # MA_CSKCB
    public_url: str  # links to the viewer and the DICOMweb endpoint
    head_code: str | None = None  # MA_TTDV: the head of the facility
    device_codes: Mapping[str, str] = field(default_factory=dict)
    facility_p12: Path | None = None
    facility_p12_password_file: Path | None = None
    token: TokenKeyConfig | None = None
    # Issue 15 §3: an export asks the population database again when the last match is older.
    identity_recheck_days: int = 30

    def device_code_for(self, modality: str | None, station_ae_title: str | None, own: str | None) -> str | None:
        if own:
            return own
        if station_ae_title and station_ae_title in self.device_codes:
            return self.device_codes[station_ae_title]
        if modality and modality in self.device_codes:
            return self.device_codes[modality]
        return None

    @property
    def dicomweb_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/dicomweb"


def _path(base: Path, value: Any) -> Path | None:
    if not value:
        return None
    p = Path(str(value))
    return p if p.is_absolute() else base / p


def load_config(settings: EmrSettings) -> ExportConfig:
    """The configuration for ``settings`` (defaults when ``exports.json`` does not exist)."""
    path = Path(settings.data_dir) / CONFIG_NAME
    raw: dict[str, Any] = {}
    if path.exists():
        raw = json.loads(path.read_text(encoding="utf-8"))
    base = Path(settings.data_dir)
    token = None
    if raw.get("token"):
        t = raw["token"]
        token = TokenKeyConfig(t["library"], t["token_label"], t["key_label"], _path(base, t["pin_file"]) or Path())
    return ExportConfig(
        facility_code=settings.facility_code,
        # The installation's public URL recorded by `filmless export config --public-url` wins: a
        # CLI run from a shell that lacks the service's FILMLESS_* variables would otherwise fall
        # back to the default port in every link it embeds.
        public_url=str(raw.get("public_url") or settings.public_url).rstrip("/"),
        head_code=raw.get("head_code") or None,
        device_codes={str(k): str(v) for k, v in (raw.get("device_codes") or {}).items()},
        facility_p12=_path(base, raw.get("facility_p12")),
        facility_p12_password_file=_path(base, raw.get("facility_p12_password_file")),
        token=token,
        identity_recheck_days=settings.identity_recheck_days,
    )


def save_config(settings: EmrSettings, updates: Mapping[str, Any]) -> Path:
    """Merge ``updates`` into ``exports.json`` (written 0600: it names key files)."""
    path = Path(settings.data_dir) / CONFIG_NAME
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for key, value in updates.items():
        if key == "device_codes":
            raw.setdefault("device_codes", {}).update(value)
        else:
            raw[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(raw, fh, ensure_ascii=False, indent=2, sort_keys=True)
    return path
