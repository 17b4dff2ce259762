"""filmless pki init / import-anchor / list and filmless verify."""

from __future__ import annotations

import json

import pytest

from filmless.cli import main


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_pki_init_list_and_verify(data_dir, signed_twice: bytes, pki, capsys) -> None:
    assert main(["pki", "init"]) == 0
    out = capsys.readouterr().out
    assert "NOT FOR CLINICAL USE" in out and "bs.an" in out
    assert main(["pki", "init"]) == 1  # never replaces a CA silently
    assert "--force" in capsys.readouterr().err
    assert main(["pki", "list"]) == 0
    assert "DEVELOPMENT" in capsys.readouterr().out

    pdf = data_dir / "report.pdf"
    pdf.write_bytes(signed_twice)
    # signed by the session's PKI, not the one just made: untrusted until imported
    assert main(["verify", str(pdf)]) == 1
    assert "KHÔNG HỢP LỆ" in capsys.readouterr().out
    ca = data_dir / "ca.pem"
    ca.write_bytes(pki.ca_cert_path.read_bytes())
    assert main(["pki", "import-anchor", str(ca)]) == 0
    capsys.readouterr()
    assert main(["verify", str(pdf)]) == 0
    out = capsys.readouterr().out
    assert "HỢP LỆ" in out and "BS. Trần Thị Bình" in out and "Chuỗi chứng thư tin cậy" in out
    assert main(["verify", "--json", str(pdf)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and [s["field_name"] for s in report["signatures"]] == ["radiologist", "head"]

    tampered = data_dir / "tampered.pdf"
    tampered.write_bytes(signed_twice.replace(b"/Count 1", b"/Count 2", 1))
    assert main(["verify", str(tampered)]) == 1
    assert main(["verify", str(data_dir / "missing.pdf")]) == 2


def test_import_anchor_rejects_non_ca(data_dir, pki, capsys) -> None:
    leaf = data_dir / "leaf.pem"
    leaf.write_bytes(pki.users["bs.an"].cert_path.read_bytes())
    assert main(["pki", "import-anchor", str(leaf)]) == 1
    assert "không phải chứng thư của tổ chức chứng thực" in capsys.readouterr().err


def test_verify_without_trust_anchors_says_so_in_one_vietnamese_line(data_dir, signed_twice: bytes, capsys) -> None:
    """A machine without the development CA (issue 13): one line, not a traceback per signature."""
    pdf = data_dir / "report.pdf"
    pdf.write_bytes(signed_twice)
    assert main(["verify", str(pdf)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "chứng thư gốc" in lines[0] and "import-anchor" in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
