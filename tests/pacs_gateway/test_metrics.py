"""The gateway's Prometheus metrics move when DICOM traffic happens (real Orthanc, DCMTK peers, real HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from pacs_gateway import Gateway
from pacs_gateway.metrics import MetricsServer
from storage import OrthancStore
from tests.helpers import wait_for

from .conftest import dcmtk, storescu_as_modalities

TOKEN = "t" * 43


@pytest.fixture
def scraped(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway],
) -> Iterator[tuple[Gateway, Callable[[], dict]]]:
    def worklist(query: dict[str, str]) -> Iterable[Mapping[str, object]]:
        return []

    gw = make_gateway(orthanc, worklist=worklist, allowed_peers=("STORESCU@127.0.0.1", "CT01@127.0.0.1"))
    server = MetricsServer(gw, "127.0.0.1", 0, TOKEN)
    server.start()

    def scrape() -> dict:
        r = requests.get(f"http://127.0.0.1:{server.port}/metrics",
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200, r.text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    yield gw, scrape
    server.stop()


def test_storescu_findscu_and_a_refused_peer_move_the_counters(
    scraped: tuple[Gateway, Callable[[], dict]], corpus: tuple[Path, list[Path]], tmp_path: Path,
) -> None:
    gw, scrape = scraped
    before = scrape()
    assert before[("filmless_gateway_instances_received_total", ())] == 0
    assert before[("filmless_gateway_queue_items", (("queue", "forward"),))] == 0

    files = corpus[1][:3]
    for result in storescu_as_modalities(gw.settings.port, files):
        assert result.returncode == 0, result.stderr[-2000:]
    wait_for(lambda: gw.stats.forwarded >= len(files), timeout=60, what="forwarders to drain")
    out = tmp_path / "wl"
    out.mkdir()
    found = dcmtk("findscu", "-W", "-aet", "CT01", "-aec", "FILMLESS", "-X", "-od", str(out),
                  "-k", "PatientName", "127.0.0.1", str(gw.settings.port), timeout=60)
    assert found.returncode == 0, found.stderr[-2000:]
    # An AE title the peer policy does not know: rejected.
    refused = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "FILMLESS", "127.0.0.1", str(gw.settings.port), timeout=30)
    assert refused.returncode != 0

    after = scrape()
    assert after[("filmless_gateway_instances_received_total", ())] == len(files)
    assert after[("filmless_gateway_instances_forwarded_total", ())] == len(files)
    assert after[("filmless_gateway_instances_quarantined_total", ())] == 0
    assert after[("filmless_gateway_worklist_queries_total", ())] == 1
    accepted = after[("filmless_gateway_associations_total", (("outcome", "accepted"),))]
    assert accepted >= 2  # at least one storescu association and the findscu one
    assert after[("filmless_gateway_associations_total", (("outcome", "rejected"),))] == 1
    assert after[("filmless_gateway_queue_items", (("queue", "forward"),))] == 0
    assert after[("filmless_gateway_queue_oldest_seconds", (("queue", "forward"),))] == 0
    assert after[("filmless_gateway_spool_free_bytes", ())] > 0
    assert ("filmless_gateway_commitment_instances_total", (("verdict", "committed"),)) in after


def test_the_spool_backlog_shows_its_depth_and_age(
    scraped: tuple[Gateway, Callable[[], dict]], corpus: tuple[Path, list[Path]],
) -> None:
    """Instances acknowledged while Orthanc cannot take them wait in the spool, and the gauges say so."""
    gw, scrape = scraped
    gw.forwarder.stop()  # as if Orthanc were down: nothing leaves the spool
    files = corpus[1][:2]
    for result in storescu_as_modalities(gw.settings.port, files):
        assert result.returncode == 0, result.stderr[-2000:]
    figures = scrape()
    assert figures[("filmless_gateway_instances_received_total", ())] == 2
    assert figures[("filmless_gateway_queue_items", (("queue", "forward"),))] == 2
    assert figures[("filmless_gateway_queue_oldest_seconds", (("queue", "forward"),))] >= 0
