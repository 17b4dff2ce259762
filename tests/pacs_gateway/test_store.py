"""C-ECHO and C-STORE into a real Orthanc through the gateway (DCMTK and pynetdicom clients)."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts, _config
from pynetdicom.sop_class import CTImageStorage

from pacs_gateway import Gateway, normalise
from storage import OrthancStore
from tests.corpus import VIETNAMESE_NAMES, describe, make_ct_series
from tests.helpers import wait_for

from .conftest import echo, storescu_as_modalities


def _landed(store: OrthancStore, uids: list[str]) -> list[str]:
    return [u for u in uids if store.find_instance(u) is None]


def test_echo_answers(orthanc: OrthancStore, make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(orthanc)
    assert echo(gw.settings.port)


def test_storescu_whole_corpus_lands_with_correct_names(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], corpus: tuple[Path, list[Path]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, files = corpus
    gw = make_gateway(orthanc)
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    results = storescu_as_modalities(gw.settings.port, files)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    entries = [describe(p) for p in files]
    wait_for(lambda: gw.stats.forwarded >= len(entries), timeout=60, what="forwarders to drain")
    assert gw.stats.received == len(entries)
    assert gw.stats.quarantined == 0
    missing = _landed(orthanc, [e.sop_instance_uid for e in entries])
    assert not missing, f"{len(missing)} instance(s) not in Orthanc"
    wrong = []
    for entry in entries:
        tags = orthanc.instance_tags(orthanc.find_instance(entry.sop_instance_uid) or "")
        # An empty trailing component group ("...=") is the same name.
        if tags.get("PatientName", "").rstrip("=") != entry.patient_name.rstrip("="):
            wrong.append((entry.path.name, entry.patient_name, tags.get("PatientName")))
    assert not wrong
    names = {e.patient_name for e in entries}
    assert set(VIETNAMESE_NAMES) <= names
    assert "Lê^Thị Ánh Tuyết" in names  # sent with no character set, as UTF-8 bytes
    # One structured line per association with its counts.
    lines = [r.getMessage() for r in caplog.records if r.name == "pacs_gateway.association"
             and '"event": "association"' in r.getMessage()]
    assert len([line for line in lines if '"calling_aet": "STORESCU"' in line]) == len(results)
    assert sum(int(line.split('"instances": ')[1].split(",")[0]) for line in lines) == len(entries)


def test_pynetdicom_client_and_duplicates_are_idempotent(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(orthanc)
    paths = make_ct_series(tmp_path / "ct", 5, rows=64, cols=64, patient_name=VIETNAMESE_NAMES[1])
    before = orthanc.count_instances()
    ae = AE(ae_title="MODALITY2")
    ae.requested_contexts = StoragePresentationContexts
    for _round in range(2):
        assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(p)).Status for p in paths]
        # The same instance twice in one association, too.
        statuses.append(assoc.send_c_store(pydicom.dcmread(paths[0])).Status)
        assoc.release()
        assert statuses == [0] * 6
    wait_for(lambda: gw.stats.forwarded == 12, timeout=30, what="12 uploads")
    assert orthanc.count_instances() == before + 5
    uid = describe(paths[0]).sop_instance_uid
    tags = orthanc.instance_tags(orthanc.find_instance(uid) or "")
    assert tags["PatientName"] == VIETNAMESE_NAMES[1]


def test_normalise_leaves_ascii_untouched_and_rewrites_latin1(tmp_path: Path) -> None:
    ascii_path = make_ct_series(tmp_path / "a", 1, rows=8, cols=8, patient_name="Nguyen^An", charset=None)[0]
    data = ascii_path.read_bytes()
    assert normalise(data).data is data
    latin = make_ct_series(tmp_path / "l", 1, rows=8, cols=8, patient_name="Hà^Thúy Vân", charset="ISO_IR 100")[0]
    out = normalise(latin.read_bytes())
    assert out.changed
    ds = pydicom.dcmread(__import__("io").BytesIO(out.data))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds["PatientName"].value == "Hà^Thúy Vân"
    assert ds.PixelData == pydicom.dcmread(latin).PixelData


def test_sop_class_context_is_offered_for_ct(orthanc: OrthancStore, make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(orthanc)
    ae = AE()
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"])
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert assoc.is_established
    assert {cx.transfer_syntax[0] for cx in assoc.accepted_contexts} == {"1.2.840.10008.1.2.4.80"}
    assoc.release()


def test_negotiating_leaves_the_servers_supported_contexts_as_they_were(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway]
) -> None:
    """Every association negotiates from the server's frozen contexts (server.SupportedContexts);
    negotiating two associations from them leaves them as they were."""
    gw = make_gateway(orthanc)
    server = gw._server
    assert server is not None

    def snapshot() -> list[tuple[object, ...]]:
        return [(cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role, cx.context_id)
                for cx in server.contexts]

    before = snapshot()
    for _ in range(2):  # a second association negotiates from the same objects
        ae = AE(ae_title="CT01")
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1"])
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.5"])
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")  # MR, default transfer syntaxes
        assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
        assert assoc.is_established
        accepted = sorted((str(cx.abstract_syntax), cx.transfer_syntax[0]) for cx in assoc.accepted_contexts)
        assert accepted == sorted([(CTImageStorage, "1.2.840.10008.1.2.4.80"), (CTImageStorage, "1.2.840.10008.1.2.5"),
                                   ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")])
        assoc.release()
    assert snapshot() == before


def test_two_gateways_in_one_process_and_global_switches_restored(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """Chunked receiving, the temp dir and pydicom's validation on read are process-wide;
    a second gateway must not break the first, and the last one to stop restores them."""
    before = (tempfile.tempdir, _config.STORE_RECV_CHUNKED_DATASET, pydicom.config.settings.reading_validation_mode)
    assert before[2] != pydicom.config.IGNORE
    first = make_gateway(orthanc)
    second = make_gateway(orthanc)  # the temp dir now points at second's incoming/
    assert tempfile.tempdir == str(second.spool.incoming)
    # An association request's UIDs are not re-validated by pydicom at each step (the gateway's own checks decide).
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE
    paths = make_ct_series(tmp_path / "ct", 2, rows=32, cols=32)
    for gw, path in zip((first, second), paths, strict=True):
        ae = AE(ae_title="CT01")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
        assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
        assoc.release()
        wait_for(lambda gw=gw: gw.stats.forwarded == 1, timeout=30, what="upload")
        assert not list(gw.spool.incoming.iterdir())
    assert not _landed(orthanc, [describe(p).sop_instance_uid for p in paths])
    second.stop()
    assert tempfile.tempdir == str(first.spool.incoming)
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE
    first.stop()
    assert (tempfile.tempdir, _config.STORE_RECV_CHUNKED_DATASET,
            pydicom.config.settings.reading_validation_mode) == before


def test_large_instance_streams_through_and_is_rewritten_header_only(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """A 20 MiB multi-frame instance: received to disk, Latin-1 + identity rewritten, streamed to Orthanc."""
    path = make_ct_series(tmp_path / "ct", 1, rows=512, cols=512, patient_name="Hà^Thúy Vân", charset="ISO_IR 100",
                          accession="A4001", patient_id="TMP-1")[0]
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 40
    pixels = np.random.default_rng(3).integers(0, 4000, size=(40, 512, 512), dtype=np.uint16).tobytes()
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    gw = make_gateway(orthanc, identity=lambda acc, study: {"PatientID": "BN900"} if acc == "A4001" else None)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    ae.maximum_pdu_size = 0
    assoc = ae.associate("127.0.0.1", gw.settings.port, ae_title="FILMLESS")
    assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
    assoc.release()
    wait_for(lambda: gw.stats.forwarded == 1, timeout=60, what="upload of the large instance")
    instance = orthanc.find_instance(str(ds.SOPInstanceUID)) or ""
    tags = orthanc.instance_tags(instance)
    assert tags["PatientID"] == "BN900" and tags["PatientName"] == "Hà^Thúy Vân"
    stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
    assert stored.SpecificCharacterSet == "ISO_IR 192"
    assert stored.PixelData == pixels
    assert not list(gw.spool.scratch.iterdir()) and not list(gw.spool.ready.iterdir())
