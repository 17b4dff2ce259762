"""Issue 13: the signature stamp and `filmless verify` print the facility's time (+0700), not the
server's UTC."""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.signing.conftest import document, make_context, signer_for


def test_signature_stamp_and_cli_verify_print_local_offset(signed_pdf_with_anchor: tuple[bytes, str]) -> None:
    pdf, out = signed_pdf_with_anchor
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert re.search(r"Thời điểm: \d\d/\d\d/\d{4} \d\d:\d\d:\d\d \+0700", text), text[-500:]
    assert "+0700" in out and "UTC" not in out


@pytest.fixture
def signed_pdf_with_anchor(tmp_path: Path, pki: Any, pki_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A report signed now on a UTC server (stamp by pades.sign_pdf), checked by `filmless verify`."""
    from emr.signing import import_trust_anchor, render_document_pdf, sign_pdf
    from filmless.cli import main

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()

    pdf = sign_pdf(render_document_pdf(document()), "radiologist", signer_for(pki, "bs.an"),
                   make_context(pki, pki_server))  # fmt: skip
    data = tmp_path / "data"
    import_trust_anchor(pki.ca_cert_path.read_bytes(), data / "pki" / "trust-anchors")
    (tmp_path / "r.pdf").write_bytes(pdf)
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(data))
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    main(["verify", str(tmp_path / "r.pdf")])
    monkeypatch.undo()
    time.tzset()
    return pdf, buf.getvalue()
