"""A stand-in for the national electronic health record: a real HTTP server that checks FHIR document Bundles.

It accepts ``POST`` of a Bundle and checks what the VN Core IG and FHIR R4
require of a document (rules cited in :func:`problems`), answering 201 with
a Location, or 422 with an OperationOutcome naming every problem. It honours
``Idempotency-Key``: a repeated key is answered like the first time and not
stored twice (as a real receiver would), but every request is counted so a
test can prove the sender never sent one message twice.

Tests steer it: :meth:`EhrStandIn.fail_next` (answer an HTTP error),
:meth:`EhrStandIn.down` / :meth:`EhrStandIn.up` (stop listening / listen
again on the same port), ``token`` (require ``Authorization: Bearer``).
Run alone: ``python -m tests.standins.ehr --port 8099``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CCCD_SYSTEM", "ICD10_SYSTEM", "EhrStandIn", "Received", "problems"]

# VN Core IG (github hl7vn/vn-core-ig): VNCorePatient's TheCCCD slice, fixedUri in
# input/resources/StructureDefinition.VN-Core.Patient_v1.0.0.xml (NamingSystem.sid-national-id.xml): the
# 12-digit citizen ID.
CCCD_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/national_id"
VN_CORE_PROFILES = "http://fhir.ehealth.gov.vn/core/StructureDefinition/"  # the IG's canonical base
# VN Core Condition code binding (ValueSet vn-core-condition-code includes http://hl7.org/fhir/sid/icd-10): ICD-10
# per QĐ 4469/QĐ-BYT.
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def _references(node: Any) -> list[str]:
    """Every ``reference`` string anywhere in a resource (contained ``#id`` references excluded)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if not value.startswith("#"):
                    found.append(value)
            else:
                found += _references(value)
    elif isinstance(node, list):
        for item in node:
            found += _references(item)
    return found


def _resolve(reference: str, full_url: str) -> str:
    """FHIR R4 Bundle §"Resolving references in Bundles": a relative reference is taken against the entry's base."""
    if reference.startswith(("http://", "https://", "urn:")):
        return reference
    match = re.match(r"^(.*/)[A-Z][A-Za-z]+/[^/]+$", full_url)
    base = match.group(1) if match else ""
    return base + reference


def problems(bundle: Any) -> list[str]:
    """What is wrong with a Bundle the health record is asked to store (empty: acceptable)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return ["not a FHIR Bundle"]
    found: list[str] = []
    if bundle.get("type") != "document":  # the push is a FHIR document (the VN Core IG has no Bundle profile)
        found.append(f"Bundle.type is {bundle.get('type')!r}, expected 'document'")
    if not (bundle.get("identifier") or {}).get("value"):  # bdl-9: a document has an identifier
        found.append("Bundle.identifier missing (bdl-9)")
    if not bundle.get("timestamp"):  # bdl-10: a document has a timestamp
        found.append("Bundle.timestamp missing (bdl-10)")
    entries = bundle.get("entry") or []
    resources = [e.get("resource") or {} for e in entries if isinstance(e, dict)]
    if not resources or resources[0].get("resourceType") != "Composition":  # bdl-11: first entry Composition
        found.append("the first entry is not a Composition (bdl-11)")
        return found
    urls = [e.get("fullUrl") for e in entries]
    if any(not u for u in urls):
        found.append("an entry has no fullUrl")
    if len(set(urls)) != len(urls):  # bdl-7: fullUrl unique
        found.append("fullUrl repeated (bdl-7)")
    known = set(urls)
    for entry in entries:
        for ref in _references(entry.get("resource")):
            if not (ref.startswith(("http", "urn:")) or _RELATIVE.match(ref)):
                found.append(f"malformed reference {ref!r}")
            elif _resolve(ref, entry.get("fullUrl") or "") not in known:
                found.append(f"{entry['resource'].get('resourceType')}: reference {ref!r} is not in the Bundle")
    for r in [bundle, *resources]:  # a profile claim the health record can resolve: the IG's canonicals only
        for profile in (r.get("meta") or {}).get("profile") or []:
            if not profile.startswith(VN_CORE_PROFILES):
                found.append(f"{r.get('resourceType')}: meta.profile {profile!r} is not a VN Core IG profile")
    composition = resources[0]
    for element in ("identifier", "status", "type", "subject", "date", "author", "title"):  # R4 Composition 1..1
        if not composition.get(element):
            found.append(f"Composition.{element} missing")
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        found.append(f"{len(patients)} Patient resources, expected 1")
    else:
        cccd = [i for i in patients[0].get("identifier") or [] if i.get("system") == CCCD_SYSTEM]
        if not cccd or not re.fullmatch(r"\d{12}", str(cccd[0].get("value", ""))):
            found.append(f"Patient has no 12-digit identifier with system {CCCD_SYSTEM}")
        subject = (composition.get("subject") or {}).get("reference", "")
        if not subject.endswith(f"Patient/{patients[0].get('id')}"):
            found.append("Composition.subject is not the Patient")
    conditions = [r for r in resources if r.get("resourceType") == "Condition"]
    if not conditions:
        found.append("no Condition (diagnosis)")
    for c in conditions:
        codes = [x for x in (c.get("code") or {}).get("coding") or [] if x.get("system") == ICD10_SYSTEM]
        if not codes or not codes[0].get("code"):
            found.append(f"Condition/{c.get('id')} has no ICD-10 code")
    for r in resources:
        if r.get("resourceType") == "DiagnosticReport" and r.get("status") in ("final", "amended"):
            forms = [f for f in r.get("presentedForm") or [] if f.get("contentType") == "application/pdf"]
            if not forms or not base64.b64decode(forms[0].get("data", "")).startswith(b"%PDF"):
                found.append(f"DiagnosticReport/{r.get('id')} is final but carries no signed PDF")
    return found


@dataclass
class Received:
    """One accepted Bundle."""

    key: str | None
    bundle: dict[str, Any]
    authorization: str | None
    location: str

    def resources(self, kind: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle["entry"] if e["resource"]["resourceType"] == kind]

    def pdfs(self) -> list[bytes]:
        out = []
        for r in self.resources("DiagnosticReport"):
            out += [base64.b64decode(f["data"]) for f in r.get("presentedForm") or []]
        for r in self.resources("DocumentReference"):
            out += [base64.b64decode(c["attachment"]["data"]) for c in r.get("content") or []
                    if c["attachment"].get("contentType") == "application/pdf"]
        return out


@dataclass
class _State:
    token: str | None = None
    fail: list[int] = field(default_factory=list)  # statuses to answer next, one per request
    fail_always: int | None = None
    requests: list[tuple[str | None, int]] = field(default_factory=list)  # (idempotency key, status answered)
    accepted: dict[str, Received] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class EhrStandIn:
    """The stand-in server on 127.0.0.1:``port`` (a free one when 0)."""

    def __init__(self, port: int = 0, *, token: str | None = None) -> None:
        self.state = _State(token=token)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir/Bundle"

    def up(self) -> None:
        if self._server is not None:
            return
        state = self.state

        class Handler(_Handler):
            shared = state

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ehr-standin", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def fail_next(self, *statuses: int) -> None:
        with self.state.lock:
            self.state.fail.extend(statuses)

    def fail_always(self, status: int | None) -> None:
        self.state.fail_always = status

    def requests_with(self, key: str) -> list[int]:
        """The statuses answered to every request that carried ``key``."""
        with self.state.lock:
            return [status for k, status in self.state.requests if k == key]

    @property
    def accepted(self) -> dict[str, Received]:
        with self.state.lock:
            return dict(self.state.accepted)


def _outcome(diagnostics: list[str], code: str = "invalid") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": d} for d in diagnostics],
    }


class _Handler(BaseHTTPRequestHandler):
    shared: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        pass

    def _answer(self, status: int, body: dict[str, Any], key: str | None, location: str | None = None) -> None:
        with self.shared.lock:
            self.shared.requests.append((key, status))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        key = self.headers.get("Idempotency-Key")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length <= 64 * 1024 * 1024 else b""
        with self.shared.lock:
            forced = self.shared.fail.pop(0) if self.shared.fail else self.shared.fail_always
        if forced is not None:
            self._answer(forced, _outcome([f"stand-in told to answer {forced}"], "transient"), key)
            return
        auth = self.headers.get("Authorization")
        if self.shared.token and auth != f"Bearer {self.shared.token}":
            self._answer(401, _outcome(["missing or wrong bearer token"], "security"), key)
            return
        if not self.headers.get("Content-Type", "").startswith("application/fhir+json"):
            self._answer(415, _outcome(["Content-Type must be application/fhir+json"]), key)
            return
        if not key:
            self._answer(400, _outcome(["Idempotency-Key header required"]), key)
            return
        with self.shared.lock:
            seen = self.shared.accepted.get(key)
        if seen is not None:
            self._answer(200, {"resourceType": "Bundle", "id": seen.location.rsplit("/", 1)[-1]}, key, seen.location)
            return
        try:
            bundle = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._answer(400, _outcome(["body is not JSON"]), key)
            return
        wrong = problems(bundle)
        if wrong:
            self._answer(422, _outcome(wrong), key)
            return
        location = f"http://127.0.0.1:{self.server.server_address[1]}/fhir/Bundle/{uuid.uuid4()}"
        with self.shared.lock:
            self.shared.accepted[key] = Received(key, bundle, auth, location)
        self._answer(201, {"resourceType": "Bundle", "id": location.rsplit("/", 1)[-1]}, key, location)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    args = parser.parse_args()
    server = EhrStandIn(args.port, token=args.token)
    print(server.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
