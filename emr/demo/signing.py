"""The demo's signing setup: a development PKI, a SoftHSM2 token with keys for the demo
physician, radiologist and head of department, the export configuration, and the signing of
the demo's papers (every "Đã ký" document of the demo carries real signatures).

Demo only: the token PINs are fixed and printed with the demo accounts. The
development CA says NOT FOR CLINICAL USE in its name.

Everything that touches the token runs in a child process
(:func:`run_token_step`): SoftHSM reads ``SOFTHSM2_CONF`` once per process, so
the caller (``filmless up``, a test run) must not load it with the demo's
configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.settings import EmrSettings
from emr.signing import (
    SOFTHSM_LIBRARY,
    DevPki,
    DevPkiServer,
    enroll_dev_token_key,
    import_trust_anchor,
    init_dev_pki,
    issue_user_certificate,
    load_dev_pki,
)

__all__ = [
    "DEMO_TOKEN_LABEL",
    "DEMO_TOKEN_PIN",
    "DEMO_TOKEN_KEYS",
    "DemoSigning",
    "demo_token_lines",
    "pki_dir",
    "prepare_signing",
    "run_token_step",
    "sign_demo_documents",
    "sign_demo_report",
    "softhsm_conf",
]

DEMO_TOKEN_LABEL = "filmless-demo"
DEMO_TOKEN_PIN = "246810"  # demo only, printed with the demo accounts
_DEMO_SO_PIN = "13579246"
# demo username → (key label on the token, name on the certificate)
DEMO_TOKEN_KEYS = {
    "bacsi": ("bacsi", "BS. Nguyễn Văn An"),
    "bschan": ("bschan", "BS. Trần Thị Bích Ngọc"),
    "truongkhoa": ("truongkhoa", "BS. Hoàng Minh Tuấn"),  # head of K19: second signature of a discharge paper
}
_FIRST_KEYS = ("bacsi", "bschan")  # what a token enrolled before the head's key holds (its marker says "ok")
DEMO_DEVICE_CT = "CL.1.79001.00012"
DEMO_HEAD_CODE = "7900000999"  # MA_TTDV: health ID (social-insurance number) of the head, 10 characters


def demo_token_lines(settings: EmrSettings) -> list[str]:
    """For the demo banner: how the demo clinicians sign (empty when the demo token was not made)."""
    if not (softhsm_conf(settings).parent / "enrolled").exists():
        return []
    users = ", ".join(DEMO_TOKEN_KEYS)
    return [
        f"  Signing token    SoftHSM2 '{DEMO_TOKEN_LABEL}', PIN {DEMO_TOKEN_PIN} (demo only), keys for {users}",
        f"                   development CA (NOT FOR CLINICAL USE) in {pki_dir(settings)}",
    ]


def pki_dir(settings: EmrSettings) -> Path:
    return settings.data_dir / "pki" / "dev"


def softhsm_conf(settings: EmrSettings) -> Path:
    return settings.softhsm2_conf or settings.data_dir / "softhsm" / "softhsm2.conf"


@dataclass(frozen=True)
class DemoSigning:
    pki: DevPki
    softhsm_conf: Path
    token_label: str = DEMO_TOKEN_LABEL
    token_pin: str = DEMO_TOKEN_PIN


def _ensure_token(settings: EmrSettings, pki: DevPki) -> Path:
    conf = softhsm_conf(settings)
    tokens = conf.parent / "tokens"
    marker = conf.parent / "enrolled"
    if not conf.exists():
        tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    # SoftHSM reads SOFTHSM2_CONF once, when the PKCS#11 module is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    enrolled: set[str] = set()
    if marker.exists():
        words = marker.read_text().split()
        enrolled = set(words) | (set(_FIRST_KEYS) if "ok" in words else set())
    missing = [(label, name) for label, name in DEMO_TOKEN_KEYS.values() if label not in enrolled]
    if not missing:
        return conf
    if not marker.exists():
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", DEMO_TOKEN_LABEL,
             "--pin", DEMO_TOKEN_PIN, "--so-pin", _DEMO_SO_PIN],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
    lib = settings.pkcs11_library if Path(settings.pkcs11_library).exists() else SOFTHSM_LIBRARY
    for key_label, name in missing:
        enroll_dev_token_key(pki, DEMO_TOKEN_LABEL, DEMO_TOKEN_PIN, key_label, name, lib_path=lib)
        enrolled.add(key_label)
        marker.write_text("\n".join(sorted(enrolled)) + "\n")
    return conf


def prepare_signing(settings: EmrSettings) -> DemoSigning:
    """Idempotent: the development PKI (+ facility key for exports), trust anchor, demo token."""
    directory = pki_dir(settings)
    if (directory / "ca.pem").exists():
        pki = load_dev_pki(directory)
    else:
        pki = init_dev_pki(directory, users=())
        issue_user_certificate(pki, "facility", "Bệnh viện filmless (đơn vị) — DEMO")
    anchors = settings.trust_anchors_dir or settings.data_dir / "pki" / "trust-anchors"
    import_trust_anchor(pki.ca_cert_path.read_bytes(), anchors)
    conf = _ensure_token(settings, pki)
    return DemoSigning(pki=load_dev_pki(directory), softhsm_conf=conf)


def register_demo_keys(session: Session, users: dict[str, Any]) -> None:
    from emr.models.signing import SigningKey
    from emr.signing import service as signatures

    system = Actor(None, "demo", "admin", None)
    for username, (key_label, _name) in DEMO_TOKEN_KEYS.items():
        user = users.get(username)
        if user is None:
            continue
        if session.scalar(select(SigningKey.id).where(SigningKey.user_id == user.id, SigningKey.kind == "pkcs11")):
            continue
        signatures.register_token_key(session, system, user.id, DEMO_TOKEN_LABEL, key_label)


def export_config_updates(settings: EmrSettings) -> dict[str, Any]:
    users = Path("pki") / "dev" / "users"
    return {
        "head_code": DEMO_HEAD_CODE,
        "device_codes": {"CT": DEMO_DEVICE_CT},
        "facility_p12": str(users / "facility.p12"),
        "facility_p12_password_file": str(users / "facility.password"),
    }


def sign_demo_documents(
    settings: EmrSettings, session: Session, steps: Sequence[tuple[int, Actor]], store: Any, demo: DemoSigning
) -> None:
    """Fill the next signature of each ``(document id, signer)`` in turn with the demo token, through the
    signing workflow (a discharge paper appears twice: the treating physician, then the head); one
    temporary in-process TSA for all of them when none is configured."""
    from dataclasses import replace

    from emr.models import Document
    from emr.signing import service as signatures

    def run(tsa_url: str) -> None:
        config = replace(signatures.signing_config(settings, store), tsa_url=tsa_url, softhsm2_conf=demo.softhsm_conf)
        for document_id, actor in steps:
            session.expire_all()
            shown = session.get(Document, document_id)
            version = next(v for v in shown.versions if v.number == shown.current_version) if shown else None
            signatures.sign_document(
                session,
                actor,
                document_id,
                config,
                method="pkcs11",
                secret=DEMO_TOKEN_PIN,
                expected_sha256=version.content_sha256 if version else "",  # the demo signs the text it wrote
            )

    if not steps:
        return
    if settings.tsa_url:
        run(settings.tsa_url)
        return
    with DevPkiServer(demo.pki.directory) as server:
        run(server.tsa_url)


def sign_demo_report(
    settings: EmrSettings, session: Session, actor: Actor, document_id: int, store: Any, demo: DemoSigning
) -> None:
    """Sign one document with the demo token (:func:`sign_demo_documents`)."""
    sign_demo_documents(settings, session, [(document_id, actor)], store, demo)


def run_token_step(settings: EmrSettings, steps: Sequence[tuple[int, Actor]] = ()) -> None:
    """In a child process: :func:`prepare_signing`, then sign each ``(document id, signer)`` of ``steps``
    with the demo token. The child does not send anything to the PACS (no store)."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    paths = [k for k, v in values.items() if isinstance(v, Path)]
    nested = [k for k, v in values.items() if dataclasses.is_dataclass(v)]  # e.g. EmrSettings.hl7
    job = {
        "settings": {k: str(v) if k in paths else dataclasses.asdict(v) if k in nested else v
                     for k, v in values.items()},
        "paths": paths,
        "nested": nested,
        "steps": [[document_id, dataclasses.asdict(signer)] for document_id, signer in steps],
    }
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    out = subprocess.run(
        [sys.executable, "-m", "emr.demo.signing"], input=json.dumps(job), text=True, capture_output=True, env=env,
        timeout=300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"demo signing step failed: {out.stderr[-2000:]}")


def _main() -> int:
    from emr.db import make_engine, make_session_factory

    job = json.loads(sys.stdin.read())
    raw = job["settings"]
    values: dict[str, Any] = {k: Path(v) if k in job["paths"] and v is not None else v for k, v in raw.items()}
    types = {f.name: f.default_factory for f in dataclasses.fields(EmrSettings)}
    for name in job["nested"]:  # rebuilt as their own dataclass; JSON turned their tuples into lists
        values[name] = types[name](**{k: tuple(v) if isinstance(v, list) else v  # type: ignore[operator]
                                      for k, v in values[name].items()})
    settings = EmrSettings(**values)
    demo = prepare_signing(settings)
    if job["steps"]:
        engine = make_engine(settings.database_url)
        try:
            with make_session_factory(engine)() as session:
                steps = [(int(document_id), Actor(**signer)) for document_id, signer in job["steps"]]
                sign_demo_documents(settings, session, steps, None, demo)
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
