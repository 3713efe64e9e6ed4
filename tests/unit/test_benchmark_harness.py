"""The benchmark harness's wait for Ready, against a control plane that answers late."""

from __future__ import annotations

from typing import Any, cast

import pytest

from benchmarks import harness
from protocol import admin
from protocol.states import State
from shoal_cli.client import AdminClient
from shoal_cli.errors import CliError, ControlPlaneTimeout


class SlowControlPlane:
    """Answers BundleList with ``answers`` in turn; None is a read it does not answer."""

    def __init__(self, *answers: int | CliError | None) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def admin(self, request: admin.BundleList, reply_type: type[Any]) -> Any:
        self.asked += 1
        answer = self.answers.pop(0) if self.answers else None  # then silence
        if answer is None:
            raise ControlPlaneTimeout("the control plane did not answer within 30 s")
        if isinstance(answer, CliError):
            raise answer
        summary = admin.BundleSummary(name="web", deployment_id="d", states={State.READY: answer})
        return admin.BundleListReply(bundles=(summary,))


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "READY_POLL", 0.001)


async def test_a_read_the_control_plane_does_not_answer_is_asked_again() -> None:
    cp = SlowControlPlane(3, None, None, 10)
    ready, _ = await harness.wait_ready(cast(AdminClient, cp), "web", 10, timeout=5, label="web")
    assert ready == 10
    assert cp.asked == 4


async def test_a_control_plane_that_never_answers_ends_the_wait_at_the_timeout() -> None:
    cp = SlowControlPlane(4)
    ready, seconds = await harness.wait_ready(
        cast(AdminClient, cp), "web", 10, timeout=0.05, label="web"
    )
    assert ready == 4  # the last count it gave
    assert seconds >= 0.05


async def test_a_refusal_is_not_waited_out() -> None:
    cp = SlowControlPlane(CliError("no such admin operation"))
    with pytest.raises(CliError, match="no such admin operation"):
        await harness.wait_ready(cast(AdminClient, cp), "web", 10, timeout=5, label="web")
