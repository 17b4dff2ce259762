"""Detached CMS over RFC 8785 canonical JSON."""

from __future__ import annotations

import pytest

from emr.signing import DocumentError, canonical_json, sign_json, verify_json_signature
from tests.signing.conftest import signer_for

VERSION = {
    "HoSoBenhAn": {"ma_bn": "BN000123", "ho_ten": "Nguyễn Thị Hồng Nhung", "phien_ban": 2,
                   "ket_luan": "Chưa phát hiện bất thường", "chi_so": [1.5, 2, 1e21]},
}


def test_canonical_json_is_rfc8785() -> None:
    assert canonical_json({"b": 1, "a": [1.0, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
    assert canonical_json('{"b": 1, "a": [1.0, "\\u00e9"]}') == canonical_json({"a": [1, "é"], "b": 1})
    with pytest.raises(DocumentError):
        canonical_json(b"{not json")


def test_json_round_trip_and_tamper(pki, context) -> None:
    cms = sign_json(VERSION, signer_for(pki, "bs.an"), context)
    anchors = [pki.ca_certificate()]
    report = verify_json_signature(VERSION, cms, anchors)
    assert report.valid, report
    assert report.signer_name == "BS. Nguyễn Văn An" and report.timestamp_time is not None
    # the export's whitespace and key order do not matter, its content does
    exported = '{ "HoSoBenhAn": {"phien_ban": 2, "ma_bn": "BN000123", "ho_ten": "Nguyễn Thị Hồng Nhung", ' \
               '"ket_luan": "Chưa phát hiện bất thường", "chi_so": [1.50, 2.0, 1E21]} }'
    assert verify_json_signature(exported, cms, anchors).valid
    changed = {"HoSoBenhAn": {**VERSION["HoSoBenhAn"], "ket_luan": "Có bất thường"}}
    bad = verify_json_signature(changed, cms, anchors)
    assert not bad.valid and "signing.verify.bad_signature" in bad.problems
    assert not verify_json_signature(VERSION, cms, []).valid
    flipped = bytearray(cms)
    flipped[len(flipped) // 2] ^= 0x01
    assert not verify_json_signature(VERSION, bytes(flipped), anchors).valid
    assert not verify_json_signature(VERSION, b"garbage", anchors).valid
