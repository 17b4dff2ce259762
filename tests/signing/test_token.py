"""PKCS#11 signing with a SoftHSM2 token (key generated on the token)."""

from __future__ import annotations

import pytest

from emr.signing import KeyAccessError, open_token_signer, sign_json, sign_pdf, verify_json_signature, verify_pdf


def test_token_sign_and_verify(report_pdf: bytes, softhsm_token: dict[str, str], pki, context) -> None:
    with open_token_signer(softhsm_token["token_label"], softhsm_token["pin"], softhsm_token["key_label"],
                           chain=[pki.ca_certificate()]) as signer:
        assert signer.source == "pkcs11"
        signed = sign_pdf(report_pdf, "head", signer, context)
        cms = sign_json({"id": 7, "ket_luan": "Bình thường"}, signer, context)
    report = verify_pdf(signed, [pki.ca_certificate()])
    assert report.valid, report
    assert report.signatures[0].signer_name == "BS. Phạm Minh Đức"
    assert verify_json_signature({"ket_luan": "Bình thường", "id": 7}, cms, [pki.ca_certificate()]).valid


def test_token_wrong_pin_and_missing_token(softhsm_token: dict[str, str]) -> None:
    with pytest.raises(KeyAccessError) as exc:
        with open_token_signer(softhsm_token["token_label"], "000000", softhsm_token["key_label"]):
            pass
    assert exc.value.key == "signing.error.bad_pin"
    with pytest.raises(KeyAccessError) as exc:
        with open_token_signer("no-such-token", softhsm_token["pin"], "x"):
            pass
    assert exc.value.key == "signing.error.token_missing"
    with pytest.raises(KeyAccessError) as exc:
        with open_token_signer(softhsm_token["token_label"], softhsm_token["pin"], "no-such-key"):
            pass
    assert exc.value.key == "signing.error.key_missing"
