"""The replay and console `Send`: a stored message is validated before it is enqueued, never sent as it is."""

from __future__ import annotations

import pydantic
import pytest

from shared import keys
from workers.deadletters import send_sync


def test_a_stored_message_that_is_not_a_change_message_is_refused_before_sending() -> None:
    # No broker is configured here: reaching the send would fail differently (and would be the bug).
    with pytest.raises(pydantic.ValidationError):
        send_sync(keys.SYNC_TASK["customers"], {"entity": "customers", "source": "customerp"}, "customers")
    with pytest.raises(pydantic.ValidationError):
        send_sync(
            keys.SYNC_TASK["customers"],
            {"entity": "customers", "source": "customerp", "source_id": "1", "surprise": True},
            "customers",
        )


def test_a_task_or_queue_other_than_the_messages_own_is_refused() -> None:
    message = {"entity": "customers", "source": "customerp", "source_id": "1"}
    with pytest.raises(ValueError, match="change goes to"):
        send_sync(keys.SYNC_TASK["products"], message, "customers")
    with pytest.raises(ValueError, match="change goes to"):
        send_sync(keys.SYNC_TASK["customers"], message, "products")
