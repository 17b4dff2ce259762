"""Environment → each package's own settings dataclass.

This is the only module in filmless that reads ``os.environ``. Every
variable is ``FILMLESS_*``; the table in README.md lists them. Values that
do not parse raise :class:`SettingsError` naming the variable, so a typo in a
port fails at start-up rather than later.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emr.core.clock import DEFAULT_TIMEZONE, valid_timezone
from emr.core.settings import EmrSettings, Hl7Settings
from pacs_gateway.settings import GatewaySettings
from storage.settings import StorageSettings

__all__ = ["Settings", "SettingsError", "load", "VARIABLES", "SAVED_SETTINGS_NAME", "save_running_settings"]


class SettingsError(ValueError):
    """A FILMLESS_* variable has a value that cannot be used."""


# name → (default shown in the docs, description). The README table is
# generated from this, so documentation and code cannot drift apart.
VARIABLES: dict[str, tuple[str, str]] = {
    "FILMLESS_DATA_DIR": ("./var", "Data directory: Orthanc storage, spool, EMR database, secrets"),
    "FILMLESS_GATEWAY_AET": ("FILMLESS", "AE title of the DICOM gateway"),
    "FILMLESS_GATEWAY_HOST": ("127.0.0.1", "Address the gateway listens on (0.0.0.0: modalities on the network)"),
    "FILMLESS_GATEWAY_PORT": ("11112", "DICOM port of the gateway"),
    "FILMLESS_GATEWAY_ALLOWED": (
        "*@127.0.0.0/8,*@::1",
        "Modalities allowed to connect: AET or AET@IP/CIDR, comma-separated, * = any AE title",
    ),
    "FILMLESS_GATEWAY_FORWARDERS": ("4", "Threads moving the spool into Orthanc"),
    "FILMLESS_GATEWAY_FORWARD_HOLD_LIMIT": ("5", "Seconds an acknowledged instance may wait for the modalities "
                                            "still sending to finish before it is forwarded anyway (0: never wait)"),
    "FILMLESS_GATEWAY_FORWARD_IDLE_MS": ("500", "Milliseconds without a new instance after which an open "
                                         "association no longer counts as sending (its images go to Orthanc)"),
    "FILMLESS_GATEWAY_FORWARDERS_WHILE_RECEIVING": ("0", "Uploads to Orthanc allowed at once while modalities "
                                                     "are sending (0: acknowledgements first)"),
    "FILMLESS_GATEWAY_MIN_FREE_MB": ("512", "Refuse instances when the spool disk has less free"),
    "FILMLESS_GATEWAY_MAX_ASSOCIATIONS": ("32", "Concurrent associations accepted"),
    "FILMLESS_GATEWAY_MAX_CONNECTIONS_PER_IP": ("16", "Open connections one address may hold at once"),
    "FILMLESS_GATEWAY_IDENTITY_TIMEOUT": (
        "120",
        "Seconds an image waits for a failing EMR identity lookup before it is forwarded as the modality sent it",
    ),
    "FILMLESS_GATEWAY_EXTRA_SOP_CLASSES": (
        "",
        "Private storage SOP class UIDs to accept besides the standard and well-known vendor ones, comma-separated",
    ),
    "FILMLESS_GATEWAY_COMMITMENT_PEERS": (
        "",
        "Where modalities take storage commitment reports when their association has closed: "
        "AET@host:port, comma-separated",
    ),
    "FILMLESS_GATEWAY_COMMITMENT_WAIT": (
        "3600",
        "Seconds an instance may take to reach Orthanc before storage commitment reports it failed",
    ),
    "FILMLESS_GATEWAY_DESTINATIONS": (
        "",
        "Workstations and PACS the gateway may send studies to by C-MOVE: AET@host:port, comma-separated",
    ),
    "FILMLESS_GATEWAY_MOVE_BY_STORAGE": (
        "1",
        "1: Orthanc's own C-STORE client sends a C-MOVE's instances (faster); 0: the gateway sends them itself "
        "(when Orthanc cannot reach the workstations)",
    ),
    "FILMLESS_GATEWAY_MOVE_DIRECT_MAX_MB": (
        "16",
        "A C-MOVE whose instances are all at most this many MiB is sent by the gateway from memory, a few "
        "instances read ahead (fastest); larger ones as FILMLESS_GATEWAY_MOVE_BY_STORAGE says; 0: never",
    ),
    "FILMLESS_GATEWAY_IAN_SUBSCRIBERS": (
        "",
        "Who gets an Instance Availability Notification when a study is complete in storage: "
        "AET@host:port, comma-separated",
    ),
    "FILMLESS_GATEWAY_METRICS_HOST": ("127.0.0.1", "Address of the gateway's Prometheus /metrics listener"),
    "FILMLESS_GATEWAY_METRICS_PORT": ("9112", "Port of the gateway's Prometheus /metrics listener (0 = off)"),
    "FILMLESS_METRICS_TOKEN_FILE": (
        "<data>/metrics-token",
        "Bearer token Prometheus must send to /metrics of the EMR and the gateway (generated, mode 0600)",
    ),
    "FILMLESS_GATEWAY_TLS_CERT": ("", "PEM certificate: enables DICOM TLS"),
    "FILMLESS_GATEWAY_TLS_KEY": ("", "PEM private key for the TLS certificate"),
    "FILMLESS_GATEWAY_TLS_CA": ("", "CA bundle: when set, modalities must present a client certificate"),
    "FILMLESS_ORTHANC_URL": (
        "",
        "Use this external Orthanc instead of starting one; several URLs, comma-separated: Orthanc servers "
        "on one index, the first preferred, the next used while it is unreachable",
    ),
    "FILMLESS_ORTHANC_USER": ("", "User name for the external Orthanc"),
    "FILMLESS_ORTHANC_PASSWORD": ("", "Password for the external Orthanc"),
    "FILMLESS_ORTHANC_HTTP_PORT": ("8042", "HTTP port of the managed Orthanc (localhost only)"),
    "FILMLESS_ORTHANC_DICOM_PORT": ("4242", "DICOM port of the managed Orthanc, only if its DICOM server is on (off)"),
    "FILMLESS_ORTHANC_AET": ("ORTHANC", "AE title of the managed Orthanc"),
    "FILMLESS_ORTHANC_PG_DSN": ("", "PostgreSQL index for Orthanc, e.g. postgresql://user@host:5432/orthanc"),
    "FILMLESS_ORTHANC_BINARY": ("/usr/sbin/Orthanc", "Orthanc executable"),
    "FILMLESS_ORTHANC_PLUGINS": ("/usr/share/orthanc/plugins", "Folder of Orthanc plugins"),
    "FILMLESS_DATABASE_URL": ("sqlite:///<data>/emr.sqlite3", "EMR database (SQLAlchemy URL)"),
    "FILMLESS_EMR_HOST": ("127.0.0.1", "Address the EMR web service listens on"),
    "FILMLESS_EMR_PORT": ("8080", "Port of the EMR web service"),
    "FILMLESS_PUBLIC_URL": ("http://127.0.0.1:<port>", "URL patients and QR codes use"),
    "FILMLESS_HOSPITAL_NAME": ("Bệnh viện filmless", "Hospital name on printouts"),
    "FILMLESS_FACILITY_CODE": ("00000", "Facility code (MA_CSKCB) for insurance exports"),
    "FILMLESS_TIMEZONE": ("Asia/Ho_Chi_Minh", "Facility time zone (IANA name): every time people and modalities see"),
    "FILMLESS_EMR_LOCKOUT_FAILURES": (
        "5",
        "Failed logins from one source on one account before that source must wait (2 s, doubling); "
        "other sources are not affected",
    ),
    "FILMLESS_EMR_LOCKOUT_MINUTES": ("15", "Longest wait a failing source gets"),
    "FILMLESS_EMR_LOGIN_RATE": ("30", "Login attempts per minute per source IP (checked before any password hashing)"),
    "FILMLESS_EMR_CONNECTIONS_PER_IP": ("32", "Open HTTP connections one client IP may hold on the EMR"),
    "FILMLESS_EMR_TRUSTED_PROXY": (
        "",
        "Address of the reverse proxy whose X-Forwarded-For/-Proto the EMR believes (* = any peer: only when "
        "nothing else can reach the EMR port)",
    ),
    "FILMLESS_BREAK_GLASS_HOURS": (
        "4", "How long an emergency (break-the-glass) access to a patient outside one's care lasts (1–24)"
    ),
    "FILMLESS_TSA_URL": ("", "RFC 3161 time-stamping service for signatures (unset: the demo dev TSA)"),
    "FILMLESS_OUTBOX_MAX_ATTEMPTS": (
        "8", "Delivery attempts (EHR push, other sites, HIS) before a message goes to the dead letters"
    ),
    "FILMLESS_OUTBOX_RETRY_SECONDS": ("30", "First retry delay of a failed delivery; doubles each time"),
    "FILMLESS_OUTBOX_RETRY_MAX_SECONDS": ("3600", "Longest delay between two delivery attempts"),
    "FILMLESS_OUTBOX_POLL_SECONDS": ("5", "How often the outbox worker looks for messages due"),
    "FILMLESS_OUTBOX_LEASE_SECONDS": (
        "300", "How long one EMR process may hold a message it is sending before another may take it over"
    ),
    "FILMLESS_OUTBOX_KEEP_SENT_DAYS": (
        "30", "Days the content of a delivered message is kept before it is emptied (its record and key stay)"
    ),
    "FILMLESS_EHR_URL": (
        "", "Health-record endpoint a FHIR document Bundle is POSTed to when a visit closes or a report is signed "
        "(unset: off)"
    ),
    "FILMLESS_EHR_TOKEN_FILE": ("", "File holding the bearer token for the health-record endpoint (mode 0600)"),
    "FILMLESS_EHR_CLIENT_CERT": ("", "PEM client certificate for mutual TLS with the health-record endpoint"),
    "FILMLESS_EHR_CLIENT_KEY": ("", "PEM private key of that client certificate"),
    "FILMLESS_EHR_CA": ("", "CA bundle the health-record endpoint's certificate is checked against (unset: system)"),
    "FILMLESS_EHR_TIMEOUT": ("30", "Seconds one push to the health-record endpoint may take"),
    "FILMLESS_PKCS11_LIBRARY": ("/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 library of the signing tokens"),
    "FILMLESS_SOFTHSM2_CONF": ("", "SoftHSM2 configuration for the demo token (sets SOFTHSM2_CONF for the EMR)"),
    "FILMLESS_TRUST_ANCHORS": ("<data>/pki/trust-anchors", "CA certificates signatures are checked against"),
    "FILMLESS_HL7_PORT": ("", "MLLP port of the HL7 v2 listener for the HIS (unset: no listener); 2575 is usual"),
    "FILMLESS_HL7_HOST": ("127.0.0.1", "Address the HL7 listener binds (0.0.0.0: the HIS is on another machine)"),
    "FILMLESS_HL7_ALLOWED": (
        "*@127.0.0.0/8,*@::1",
        "HIS allowed to send: FACILITY@IP/CIDR (MSH-4), comma-separated, * = any facility",
    ),
    "FILMLESS_HL7_MAX_KB": ("1024", "Largest HL7 message accepted (KiB); a bigger one is refused"),
    "FILMLESS_HL7_TIMEOUT": ("60", "Seconds a connection may take to deliver one whole message before it is closed"),
    "FILMLESS_HL7_CONNECTIONS_PER_IP": ("4", "Open MLLP connections one address may hold"),
    "FILMLESS_HL7_DEFAULT_CHARSET": (
        "utf-8",
        "Charset of HL7 messages whose MSH-18 is empty (Python codec name: utf-8, cp1258, latin-1...)",
    ),
    "FILMLESS_HL7_RECEIVER": ("", "host:port of the HIS's MLLP receiver for ORU^R01 signed reports (unset: none)"),
    "FILMLESS_HL7_APPLICATION": ("FILMLESS", "MSH-3 sending application of the messages filmless sends"),
    "FILMLESS_HL7_KEEP_DAYS": ("90", "Days the exact bytes of each HL7 message are kept; then only its log row "
                                     "(type, control ID, status, patient) stays"),
    "FILMLESS_IDENTITY_URL": (
        "",
        "National population database gateway that checks name, birth date and sex for a CCCD "
        "(docs/identity-adapter.md); unset: identity checks off",
    ),
    "FILMLESS_IDENTITY_CREDENTIAL_FILE": ("", "File (0600) holding the bearer credential for the identity gateway"),
    "FILMLESS_IDENTITY_TIMEOUT": (
        "3", "Seconds one call to the identity gateway may take (1–30); slower means retry later"
    ),
    "FILMLESS_IDENTITY_RECHECK_DAYS": ("30", "An export asks the identity gateway again when the last match is older"),
}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    storage: StorageSettings
    gateway: GatewaySettings
    emr: EmrSettings


def _int(env: Mapping[str, str], name: str, default: int, lo: int = 0, hi: int = 2**31) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    return _int(env, name, default, 1, 65535)


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "yes", "true", "on"):
        return True
    if raw in ("0", "no", "false", "off"):
        return False
    raise SettingsError(f"{name}={env[name]!r} is not 1 or 0")


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name, "").strip()
    return raw or default


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _str(env, name)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r}: no such file")
    return path


def _ae_title(value: str, name: str) -> str:
    if not 0 < len(value) <= 16 or not value.isascii() or "\\" in value or value != value.strip():
        raise SettingsError(f"{name}={value!r} is not a valid AE title (1-16 ASCII characters)")
    return value


def _allowed(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        aet, _, addr = entry.partition("@")
        if aet != "*":
            _ae_title(aet, name)
        if addr:
            try:
                ipaddress.ip_network(addr, strict=False)
            except ValueError:
                raise SettingsError(f"{name}: {addr!r} is not an IP address or network") from None
    return entries


def _stations(allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The modalities' AE titles when the gateway admits them by name only; none when an entry admits
    any AE title (``*``), as then any station may ask the worklist."""
    names = [entry.partition("@")[0] for entry in allowed]
    return () if "*" in names else tuple(dict.fromkeys(names))


def _uids(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in (env.get(name) or "").split(",") if e.strip())
    for entry in entries:
        if len(entry) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", entry):
            raise SettingsError(f"{name}: {entry!r} is not a UID")
    return entries


def _return_addresses(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    from pacs_gateway import ReturnAddress

    entries = tuple(e.strip() for e in (env.get(name) or "").split(",") if e.strip())
    for entry in entries:
        try:
            address = ReturnAddress.parse(entry)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None
        _ae_title(address.ae_title, name)
    return entries


def _timezone(env: Mapping[str, str], name: str) -> str:
    value = _str(env, name, DEFAULT_TIMEZONE) or DEFAULT_TIMEZONE
    try:
        valid_timezone(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return value


def _hl7_allowed(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return Hl7Settings.allowed
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        facility, sep, addr = entry.rpartition("@")
        if not sep or not facility or any(c in facility for c in "|^~\\&"):
            raise SettingsError(f"{name}: {entry!r} is not FACILITY@IP/CIDR")
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {addr!r} is not an IP address or network") from None
    return entries


def _hl7(env: Mapping[str, str]) -> Hl7Settings:
    import codecs

    charset = _str(env, "FILMLESS_HL7_DEFAULT_CHARSET", "utf-8") or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise SettingsError(f"FILMLESS_HL7_DEFAULT_CHARSET={charset!r} is not a known charset") from None
    receiver = _str(env, "FILMLESS_HL7_RECEIVER", "") or ""
    if receiver:
        host, sep, port = receiver.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"FILMLESS_HL7_RECEIVER={receiver!r} is not host:port")
    return Hl7Settings(
        host=_str(env, "FILMLESS_HL7_HOST", "127.0.0.1") or "127.0.0.1",
        port=_port(env, "FILMLESS_HL7_PORT", 0) if _str(env, "FILMLESS_HL7_PORT") else 0,
        allowed=_hl7_allowed(env, "FILMLESS_HL7_ALLOWED"),
        max_bytes=_int(env, "FILMLESS_HL7_MAX_KB", 1024, 1, 64 * 1024) * 1024,
        read_timeout=float(_int(env, "FILMLESS_HL7_TIMEOUT", 60, 1, 3600)),
        connections_per_ip=_int(env, "FILMLESS_HL7_CONNECTIONS_PER_IP", 4, 1, 1000),
        default_charset=charset,
        receiver=receiver,
        application=_str(env, "FILMLESS_HL7_APPLICATION", "FILMLESS") or "FILMLESS",
        keep_raw_days=_int(env, "FILMLESS_HL7_KEEP_DAYS", 90, 1, 36500),
    )
def _http_url(env: Mapping[str, str], name: str) -> str | None:
    """An endpoint filmless calls (health record, identity gateway): http(s) or unset."""
    value = _str(env, name)
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={value!r} must start with http:// or https://")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read ``FILMLESS_*`` variables (default: the process environment over the settings file
    ``filmless up`` left in the data directory, so other commands find the running installation)."""
    env = with_saved_settings(os.environ) if env is None else env
    data_dir = Path(_str(env, "FILMLESS_DATA_DIR", "var") or "var").expanduser().absolute()

    # Several URLs, comma-separated: Orthanc servers on one shared index, the first
    # preferred, the others used while it cannot be reached (scale-out, issue 16).
    urls = [u.strip() for u in (_str(env, "FILMLESS_ORTHANC_URL") or "").split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"FILMLESS_ORTHANC_URL: {url!r} must start with http:// or https://")
    external = urls[0] if urls else None
    storage = StorageSettings(
        data_dir=data_dir / "orthanc",
        http_port=_port(env, "FILMLESS_ORTHANC_HTTP_PORT", 8042),
        dicom_port=_port(env, "FILMLESS_ORTHANC_DICOM_PORT", 4242),
        dicom_aet=_ae_title(_str(env, "FILMLESS_ORTHANC_AET", "ORTHANC") or "", "FILMLESS_ORTHANC_AET"),
        external_url=external,
        failover_urls=tuple(urls[1:]),
        external_username=_str(env, "FILMLESS_ORTHANC_USER"),
        external_password=_str(env, "FILMLESS_ORTHANC_PASSWORD"),
        pg_dsn=_str(env, "FILMLESS_ORTHANC_PG_DSN"),
        binary=Path(_str(env, "FILMLESS_ORTHANC_BINARY", "/usr/sbin/Orthanc") or ""),
        plugins_dir=Path(_str(env, "FILMLESS_ORTHANC_PLUGINS", "/usr/share/orthanc/plugins") or ""),
    )

    cert = _path(env, "FILMLESS_GATEWAY_TLS_CERT")
    key = _path(env, "FILMLESS_GATEWAY_TLS_KEY")
    if (cert is None) != (key is None):
        raise SettingsError("FILMLESS_GATEWAY_TLS_CERT and FILMLESS_GATEWAY_TLS_KEY go together")
    ca = _path(env, "FILMLESS_GATEWAY_TLS_CA")
    if ca is not None and cert is None:
        raise SettingsError("FILMLESS_GATEWAY_TLS_CA needs FILMLESS_GATEWAY_TLS_CERT and _KEY")
    metrics_token_file = Path(_str(env, "FILMLESS_METRICS_TOKEN_FILE") or data_dir / "metrics-token").expanduser()
    gateway = GatewaySettings(
        ae_title=_ae_title(_str(env, "FILMLESS_GATEWAY_AET", "FILMLESS") or "", "FILMLESS_GATEWAY_AET"),
        host=_str(env, "FILMLESS_GATEWAY_HOST", "127.0.0.1") or "127.0.0.1",
        port=_port(env, "FILMLESS_GATEWAY_PORT", 11112),
        spool_dir=data_dir / "spool",
        allowed_peers=_allowed(env, "FILMLESS_GATEWAY_ALLOWED", GatewaySettings.allowed_peers),
        forwarders=_int(env, "FILMLESS_GATEWAY_FORWARDERS", 4, 1, 64),
        forward_hold_limit=float(_int(env, "FILMLESS_GATEWAY_FORWARD_HOLD_LIMIT", 5, 0, 86400)),
        forward_idle_after=_int(env, "FILMLESS_GATEWAY_FORWARD_IDLE_MS", 500, 0, 600_000) / 1000,
        forwarders_while_receiving=_int(env, "FILMLESS_GATEWAY_FORWARDERS_WHILE_RECEIVING", 0, 0, 64),
        min_free_bytes=_int(env, "FILMLESS_GATEWAY_MIN_FREE_MB", 512, 0, 10**7) * 1024 * 1024,
        max_associations=_int(env, "FILMLESS_GATEWAY_MAX_ASSOCIATIONS", 32, 1, 1000),
        max_connections_per_ip=_int(env, "FILMLESS_GATEWAY_MAX_CONNECTIONS_PER_IP", 16, 1, 1000),
        identity_timeout=float(_int(env, "FILMLESS_GATEWAY_IDENTITY_TIMEOUT", 120, 0, 7 * 86400)),
        extra_sop_classes=_uids(env, "FILMLESS_GATEWAY_EXTRA_SOP_CLASSES"),
        commitment_peers=_return_addresses(env, "FILMLESS_GATEWAY_COMMITMENT_PEERS"),
        commitment_wait=float(_int(env, "FILMLESS_GATEWAY_COMMITMENT_WAIT", 3600, 1, 7 * 86400)),
        destinations=_return_addresses(env, "FILMLESS_GATEWAY_DESTINATIONS"),
        move_by_storage=_switch(env, "FILMLESS_GATEWAY_MOVE_BY_STORAGE", True),
        move_direct_max_mb=_int(env, "FILMLESS_GATEWAY_MOVE_DIRECT_MAX_MB", 16, 0, 1024),
        ian_subscribers=_return_addresses(env, "FILMLESS_GATEWAY_IAN_SUBSCRIBERS"),
        metrics_host=_str(env, "FILMLESS_GATEWAY_METRICS_HOST", "127.0.0.1") or "127.0.0.1",
        metrics_port=_int(env, "FILMLESS_GATEWAY_METRICS_PORT", 9112, 0, 65535),
        metrics_token_file=metrics_token_file,
        tls_cert=cert,
        tls_key=key,
        tls_ca=ca,
    )

    emr_port = _port(env, "FILMLESS_EMR_PORT", 8080)
    ehr_cert = _path(env, "FILMLESS_EHR_CLIENT_CERT")
    ehr_key = _path(env, "FILMLESS_EHR_CLIENT_KEY")
    if (ehr_cert is None) != (ehr_key is None):
        raise SettingsError("FILMLESS_EHR_CLIENT_CERT and FILMLESS_EHR_CLIENT_KEY go together")
    emr = EmrSettings(
        data_dir=data_dir,
        database_url=_str(env, "FILMLESS_DATABASE_URL") or f"sqlite:///{data_dir / 'emr.sqlite3'}",
        host=_str(env, "FILMLESS_EMR_HOST", "127.0.0.1") or "127.0.0.1",
        port=emr_port,
        secret_key_file=data_dir / "secret_key",
        public_url=(_str(env, "FILMLESS_PUBLIC_URL") or f"http://127.0.0.1:{emr_port}").rstrip("/"),
        hospital_name=_str(env, "FILMLESS_HOSPITAL_NAME", "Bệnh viện filmless") or "",
        facility_code=_str(env, "FILMLESS_FACILITY_CODE", "00000") or "",
        timezone=_timezone(env, "FILMLESS_TIMEZONE"),
        modality_stations=_stations(gateway.allowed_peers),
        lockout_failures=_int(env, "FILMLESS_EMR_LOCKOUT_FAILURES", 5, 1, 1000),
        lockout_minutes=_int(env, "FILMLESS_EMR_LOCKOUT_MINUTES", 15, 1, 10080),
        login_rate_per_minute=_int(env, "FILMLESS_EMR_LOGIN_RATE", 30, 1, 100000),
        connections_per_ip=_int(env, "FILMLESS_EMR_CONNECTIONS_PER_IP", 32, 1, 10000),
        trusted_proxy=_str(env, "FILMLESS_EMR_TRUSTED_PROXY", "") or "",
        break_glass_hours=_int(env, "FILMLESS_BREAK_GLASS_HOURS", 4, 1, 24),
        tsa_url=_str(env, "FILMLESS_TSA_URL"),
        outbox_max_attempts=_int(env, "FILMLESS_OUTBOX_MAX_ATTEMPTS", 8, 1, 1000),
        outbox_retry_seconds=_int(env, "FILMLESS_OUTBOX_RETRY_SECONDS", 30, 1, 86400),
        outbox_retry_max_seconds=_int(env, "FILMLESS_OUTBOX_RETRY_MAX_SECONDS", 3600, 1, 7 * 86400),
        outbox_poll_seconds=float(_int(env, "FILMLESS_OUTBOX_POLL_SECONDS", 5, 1, 3600)),
        outbox_lease_seconds=_int(env, "FILMLESS_OUTBOX_LEASE_SECONDS", 300, 10, 86400),
        outbox_keep_sent_days=_int(env, "FILMLESS_OUTBOX_KEEP_SENT_DAYS", 30, 1, 3650),
        ehr_url=(_http_url(env, "FILMLESS_EHR_URL") or "").rstrip("/") or None,
        ehr_token_file=_path(env, "FILMLESS_EHR_TOKEN_FILE"),
        ehr_client_cert=ehr_cert,
        ehr_client_key=ehr_key,
        ehr_ca=_path(env, "FILMLESS_EHR_CA"),
        ehr_timeout=_int(env, "FILMLESS_EHR_TIMEOUT", 30, 1, 600),
        pkcs11_library=_str(env, "FILMLESS_PKCS11_LIBRARY", EmrSettings.pkcs11_library) or EmrSettings.pkcs11_library,
        softhsm2_conf=Path(conf).expanduser() if (conf := _str(env, "FILMLESS_SOFTHSM2_CONF")) else None,
        trust_anchors_dir=Path(_str(env, "FILMLESS_TRUST_ANCHORS") or data_dir / "pki" / "trust-anchors"),
        hl7=_hl7(env),
        metrics_token_file=metrics_token_file,
        identity_url=_http_url(env, "FILMLESS_IDENTITY_URL"),
        identity_credential_file=_path(env, "FILMLESS_IDENTITY_CREDENTIAL_FILE"),
        identity_timeout=float(_int(env, "FILMLESS_IDENTITY_TIMEOUT", 3, 1, 30)),
        identity_recheck_days=_int(env, "FILMLESS_IDENTITY_RECHECK_DAYS", 30, 0, 3650),
    )
    if emr.ehr_timeout >= emr.outbox_lease_seconds:
        # a push still running when its lease ends could be taken over and sent twice
        raise SettingsError("FILMLESS_EHR_TIMEOUT must be shorter than FILMLESS_OUTBOX_LEASE_SECONDS")
    return Settings(data_dir=data_dir, storage=storage, gateway=gateway, emr=emr)


# -- the running installation's settings -----------------------------------------
# ``filmless up`` writes the FILMLESS_* variables it was started with here, so
# `filmless check`, `import`, `emr ...` in another terminal reach the same ports and
# database without re-exporting them. The environment still wins, variable by variable.
SAVED_SETTINGS_NAME = "filmless-settings.json"


def _saved_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("FILMLESS_DATA_DIR") or "var").expanduser().absolute() / SAVED_SETTINGS_NAME


def with_saved_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` over the saved settings of the data directory ``env`` names (``./var`` by default).
    An unreadable or malformed file is ignored (the command then uses the environment alone)."""
    merged: dict[str, str] = {}
    try:
        import json

        saved = json.loads(_saved_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict):
        merged.update(
            {k: v for k, v in saved.items() if isinstance(k, str) and k.startswith("FILMLESS_") and isinstance(v, str)}
        )
    merged.update(env)
    return merged


def save_running_settings(settings: Settings) -> Path:
    """Write the FILMLESS_* variables of this process to the data directory (mode 0600: a DSN or
    Orthanc password may be among them), with the data directory itself made absolute."""
    import json

    values = {k: v for k, v in os.environ.items() if k.startswith("FILMLESS_")}
    values["FILMLESS_DATA_DIR"] = str(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = settings.data_dir / SAVED_SETTINGS_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(values, fh, ensure_ascii=False, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
