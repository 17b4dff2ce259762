"""FHIR Provenance of a discharge paper names every signer and the capacity the head's signature was given in.

Before, the Provenance had one agent (the last signer) and a Signature whose ``who`` was that last signer but
whose CMS was the first signer's; a deputy ("KT. Trưởng khoa") or acting head ("Q. Trưởng khoa") signing in the
head's place looked like the head. Now each signature is an agent with its own Signature (its own time and CMS),
the head's slot carries its capacity in ``agent.role``, and a deputy signs ``onBehalfOf`` the head's post
(FHIR R4 Provenance.agent.onBehalfOf, Signature.onBehalfOf); an acting head holds the authority in their own
name, so has none."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from sqlalchemy import select

from emr.access import substitutes
from emr.core.clock import local_today
from emr.exports.fhir import SIGNER_CAPACITY
from emr.fhir.search import read_resource
from emr.models import Document, DocumentVersion
from emr.models.signing import DocumentSignature
from emr.patients import encounters
from emr.signing import service as svc

from .conftest import TOKEN_LABEL, TOKEN_PIN
from .test_workflow import (  # the workflow's app, users and signing form, and its fixtures
    SETUP,
    Env,
    _cheap_argon2,  # noqa: F401 - autouse fixture
    _sign,
    env,  # noqa: F401 - fixture
    token_keys,  # noqa: F401 - fixture
)

PAPER = {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi (J18.9)", "treatment": "Kháng sinh", "result": "1"}
CCHN = "https://filmless.vn/fhir/sid/cchn"  # the VN Core IG has no practising-certificate system (VNCorePractitioner)


def _signed_paper(env: Env, head_slot: str) -> tuple[Document, DocumentVersion]:  # noqa: F811
    doc = env.document("discharge_summary", PAPER)
    encounters.close_encounter(env.session, env.actor("physician"), env.encounter_id, "Viêm phổi", main_code="J18.9")
    assert _sign(env.client("physician"), doc.id, TOKEN_PIN).status_code == 302
    assert _sign(env.client(head_slot), doc.id, TOKEN_PIN).status_code == 302
    env.session.expire_all()
    d = env.session.get(Document, doc.id)
    assert d is not None and d.status == "signed"
    return d, d.versions[0]


def _provenance(env: Env, version: DocumentVersion) -> dict[str, Any]:  # noqa: F811
    resource, _patient = read_resource(
        env.session,
        "Provenance",
        str(version.id),
        public_url="https://emr.example",
        dicomweb_url="https://emr.example/dicom-web",
        artifacts=svc.DbArtifacts(),
    )
    return resource


def _cchn(reference: dict[str, Any]) -> str:
    return str(reference["identifier"]["value"])


def _check_signers(env: Env, prov: dict[str, Any], version: DocumentVersion, head_user: str) -> None:  # noqa: F811
    """Two agents and two Signatures, in signing order, each with its own signer, time and CMS."""
    rows = env.session.scalars(
        select(DocumentSignature)
        .where(DocumentSignature.version_id == version.id)
        .order_by(DocumentSignature.order_index)
    ).all()
    physician, head = env.users["physician"], env.users[head_user]
    assert [_cchn(a["who"]) for a in prov["agent"]] == [physician.practising_cert_no, head.practising_cert_no]
    assert [_cchn(s["who"]) for s in prov["signature"]] == [physician.practising_cert_no, head.practising_cert_no]
    assert [base64.b64decode(s["data"]) for s in prov["signature"]] == [bytes(r.cms) for r in rows]
    assert "role" not in prov["agent"][0] and "onBehalfOf" not in prov["agent"][0]


def _role(agent: dict[str, Any]) -> tuple[str, str]:
    [role] = agent["role"]
    [coding] = role["coding"]
    assert coding["system"] == SIGNER_CAPACITY and coding["display"] == role["text"]
    return coding["code"], role["text"]


def test_a_deputy_signs_on_behalf_of_the_head(env: Env) -> None:  # noqa: F811
    other = env.users["other"]
    svc.register_token_key(env.session, SETUP, other.id, TOKEN_LABEL, env.labels["radiologist"])
    today = local_today()
    substitutes.designate(
        env.session,
        SETUP,
        other.id,
        env.users["head"].department_id,
        "deputy",
        today,
        today + dt.timedelta(days=14),
        "31/QĐ-BV",
    )
    _doc, version = _signed_paper(env, "other")
    prov = _provenance(env, version)
    _check_signers(env, prov, version, "other")
    deputy = prov["agent"][1]
    assert _role(deputy) == ("deputy", "KT. Trưởng khoa")
    post = {"type": "PractitionerRole", "display": "Trưởng khoa, Khoa Nội tổng hợp"}
    assert deputy["onBehalfOf"] == post and prov["signature"][1]["onBehalfOf"] == post
    assert env.users["head"].full_name not in str(prov)  # the head did not sign and is not named as signer


def test_an_acting_head_signs_in_their_own_name(env: Env) -> None:  # noqa: F811
    head, other = env.users["head"], env.users["other"]
    head.is_department_head = False  # the post is vacant
    env.session.commit()
    svc.register_token_key(env.session, SETUP, other.id, TOKEN_LABEL, env.labels["radiologist"])
    substitutes.designate(env.session, SETUP, other.id, head.department_id, "acting", local_today(), None, "07/QĐ-BV")
    _doc, version = _signed_paper(env, "other")
    prov = _provenance(env, version)
    _check_signers(env, prov, version, "other")
    assert _role(prov["agent"][1]) == ("acting", "Q. Trưởng khoa")
    assert "onBehalfOf" not in prov["agent"][1] and "onBehalfOf" not in prov["signature"][1]


def test_the_head_signs_as_head(env: Env) -> None:  # noqa: F811
    _doc, version = _signed_paper(env, "head")
    prov = _provenance(env, version)
    _check_signers(env, prov, version, "head")
    assert _role(prov["agent"][1]) == ("head", "Trưởng khoa")
    assert "onBehalfOf" not in prov["agent"][1]
