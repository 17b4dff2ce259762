"""`filmless emr ...` refusals are Vietnamese sentences from the catalogue, never a catalogue key or an English
developer message (a ValidationFailed's text is "invalid input: field=catalogue.key")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emr.core.exceptions import ConflictError, ValidationFailed
from emr.i18n import t
from filmless.cli import main

DATA = Path(__file__).resolve().parents[1] / "catalogues" / "data"
RAW_KEY = re.compile(r"\b[a-z_0-9]+\.(?:error|entry|cli)\.[a-z_0-9.]+\b")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(tmp_path))
    assert main(["emr", "migrate"]) == 0
    capsys.readouterr()
    return tmp_path


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 1, argv
    err = capsys.readouterr().err.strip()
    assert not RAW_KEY.search(err), err
    return err


def test_create_user_with_a_taken_certificate_number(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emr", "create-user", "bs.an", "physician", "--full-name", "BS. Nguyễn Văn An",
                 "--cert", "001234/HCM-CCHN", "--generate"]) == 0
    capsys.readouterr()
    err = _refused(capsys, "emr", "create-user", "bs.binh", "radiologist", "--full-name", "BS. Trần Thị Bình",
                   "--cert", "001234/hcm-cchn", "--generate")
    assert err == "filmless emr: " + t("users.error.cert_taken", cert="001234/hcm-cchn", username="bs.an",
                                       full_name="BS. Nguyễn Văn An")
    err = _refused(capsys, "emr", "create-user", "bs.an", "nurse", "--full-name", "Điều dưỡng An", "--generate")
    assert err == "filmless emr: " + t("users.error.exists")


def test_create_user_passwords_that_differ(
    cli: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["mot-mat-khau-dai", "mat-khau-khac-han"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["emr", "create-user", "dd.lan", "nurse", "--full-name", "Trần Thị Lan"]) == 2
    assert capsys.readouterr().err.strip() == t("users.cli.passwords_differ")


def test_create_token_refusals(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(capsys, "emr", "create-token", "khong.co")
    assert err == t("users.cli.no_user", username="khong.co")
    assert main(["emr", "create-admin", "quantri", "--generate"]) == 0
    capsys.readouterr()
    err = _refused(capsys, "emr", "create-token", "quantri", "--days", "0")
    assert err == "filmless emr: " + t("users.error.token_days")


def test_add_department_outside_the_catalogue(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emr", "load-catalogue", "department", str(DATA / "department.csv"), "--valid-from",
                 "2024-01-01"]) == 0
    capsys.readouterr()
    err = _refused(capsys, "emr", "add-department", "K99", "Khoa không có")
    assert err == "filmless emr: " + t("catalogues.entry.department")
    assert main(["emr", "add-department", "K19", "Khoa Ngoại tổng hợp"]) == 0


def test_load_icd10_without_the_file(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emr", "load-icd10", str(cli / "khong-co.csv")]) == 2
    assert capsys.readouterr().err.strip() == t("prices.cli.no_file", file=cli / "khong-co.csv")


def test_user_message_of_emr_errors() -> None:
    """What the commands print: each field's message with its placeholders; a generic one names its field."""
    exc = ValidationFailed({"full_name": "errors.field_too_long_max", "role": "users.error.role"},
                           params={"full_name": {"max": 200}})
    assert exc.user_message() == f"full_name: {t('errors.field_too_long_max', max=200)} {t('users.error.role')}"
    assert ConflictError("user x exists", field="username", key="users.error.exists").user_message() == t(
        "users.error.exists")
