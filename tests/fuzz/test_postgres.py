"""The fuzz tests whose input ends up in SQL, again with PostgreSQL as the store.

SQLite stores whatever it is given; PostgreSQL refuses a NUL in text and a value longer than its
column, and a refused statement there is a 500 or a 1011 here. So the identifiers that travel
from the network into queries (webhook ids and facts, path segments, `call_control_id`
parameters, dialled numbers) are fuzzed against a service on PostgreSQL too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import pg_database
from tests.conftest import ServiceProcess, running_service
from tests.fuzz.test_browser import (
    test_call_events_handshakes_welcome_or_refuse_with_a_reason,
    test_frontend_audio_handshakes_format_or_refuse_with_a_reason,
)
from tests.fuzz.test_rest import (
    test_dial_bodies,
    test_paths_and_methods_of_the_calls_api,
)
from tests.fuzz.test_webhooks import (
    test_signed_envelopes_with_wrong_parts_are_stored_or_400,
    test_signed_events_in_any_order_only_move_calls_forward,
)

__all__ = [
    "test_call_events_handshakes_welcome_or_refuse_with_a_reason",
    "test_dial_bodies",
    "test_frontend_audio_handshakes_format_or_refuse_with_a_reason",
    "test_paths_and_methods_of_the_calls_api",
    "test_signed_envelopes_with_wrong_parts_are_stored_or_400",
    "test_signed_events_in_any_order_only_move_calls_forward",
]

from tests.fuzz.test_browser import talk_call  # noqa: F401  (fixtures those tests use)
from tests.fuzz.test_rest import dialled  # noqa: F401


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """This module's service keeps its calls and events in PostgreSQL."""
    with (
        pg_database() as database,
        running_service(
            tmp_path_factory.mktemp("service-pg"), CALLBRIDGE_DATABASE_URL=database
        ) as svc,
    ):
        yield svc
