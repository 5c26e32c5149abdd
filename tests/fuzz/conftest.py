"""Fixtures of the fuzz suite: one target per module, and the invariants after every test.

The Hypothesis profiles (`callbridge-fuzz`, and `callbridge-fuzz-campaign` when
CALLBRIDGE_FUZZ_EXAMPLES is set) are registered in `harness.py`, which every fuzz module
imports; `fuzz(n)` picks between them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from callbridge.sim import WebhookSigner
from tests.conftest import ServiceProcess
from tests.fuzz.harness import WAIT, FuzzTarget, LoopThread


@pytest.fixture(scope="module")
def target(service: ServiceProcess, signer: WebhookSigner) -> Iterator[FuzzTarget]:
    """The module's service, with a control call and an events observer already running."""
    loop = LoopThread()
    try:
        with (
            httpx.Client(base_url=service.url, timeout=WAIT, headers=service.api_headers) as api,
            httpx.Client(base_url=service.sim_url, timeout=WAIT) as sim,
        ):
            fuzz_target = FuzzTarget(service, api, sim, signer, loop)
            try:
                fuzz_target.witness.start()
                yield fuzz_target
            finally:
                fuzz_target.close()
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def _invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fuzz test: alive, answering, other calls flowing, the store consistent."""
    yield
    if "target" in request.fixturenames:
        request.getfixturevalue("target").verify()
