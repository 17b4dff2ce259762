"""The one back-off schedule of the gateway's retried work (MPPS to the EMR, storage commitment reports)."""

from __future__ import annotations

from pacs_gateway.backoff import Backoff
from pacs_gateway.dimse_status import Status


def test_waits_double_up_to_the_cap_and_success_starts_again() -> None:
    now = [100.0]
    b = Backoff(0.5, 3.0, clock=lambda: now[0])
    assert b.wait_left("x") == 0.0
    assert [b.failed("x") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.wait_left("x") == 3.0
    now[0] += 1.0
    assert b.wait_left("x") == 2.0
    assert b.wait_left("other") == 0.0  # keys are independent
    b.forget("x")
    assert b.wait_left("x") == 0.0 and b.failed("x") == 0.5


def test_status_table_holds_the_standard_values() -> None:
    assert (Status.SUCCESS, Status.OUT_OF_RESOURCES, Status.CANNOT_UNDERSTAND, Status.PENDING) == (
        0x0000, 0xA700, 0xC000, 0xFF00)
    assert (Status.PROCESSING_FAILURE, Status.NO_SUCH_OBJECT_INSTANCE, Status.CLASS_INSTANCE_CONFLICT) == (
        0x0110, 0x0112, 0x0119)
    assert len({s.value for s in Status}) == len(Status)  # no two names for one code
