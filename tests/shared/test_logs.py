"""Log lines: JSON with the record's context in containers, readable text on a terminal, never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import logs

SECRET = "s3cr3t-wave-token"
OTHER_SECRET = "customerp-key-123"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.addFilter(logs.RedactingFilter([SECRET, OTHER_SECRET, ""]))
    logger = logging.getLogger(f"wavesync.test.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_json_line_has_time_level_logger_message_and_the_bound_record(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(entity="customers", system="customerp", record_id="42", task_id="t-1", task_name=None):
        logger.warning("retrying %s in %.1fs", "customers:customerp:42", 1.5)
    [line] = json_lines(stream)
    assert line["level"] == "warning"
    assert line["logger"] == logger.name
    assert line["message"] == "retrying customers:customerp:42 in 1.5s"
    assert (line["entity"], line["system"], line["record_id"], line["task_id"]) == (
        "customers",
        "customerp",
        "42",
        "t-1",
    )
    assert "task_name" not in line
    assert str(line["ts"]).endswith("+00:00")


def test_bound_fields_end_with_their_context_and_nest(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(entity="orders"):
        with logs.bound(record_id="7"):
            logger.info("inner")
        logger.info("outer")
    logger.info("outside")
    inner, outer, outside = json_lines(stream)
    assert (inner["entity"], inner["record_id"]) == ("orders", "7")
    assert outer["entity"] == "orders"
    assert "record_id" not in outer
    assert "entity" not in outside


def test_explicit_extra_fields_win_over_bound_ones(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(entity="customers", record_id="1"):
        logger.error("dead-lettered", extra={"wave_id": "W1", "customerp_id": "1"})
    [line] = json_lines(stream)
    assert (line["customerp_id"], line["wave_id"], line["entity"]) == ("1", "W1", "customers")


def test_secrets_are_redacted_from_message_arguments_and_exceptions(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    logger.info(f"token {SECRET} in the format string")
    logger.info("key %s in an argument", OTHER_SECRET)
    try:
        raise RuntimeError(f"Authorization: Bearer {SECRET}")
    except RuntimeError:
        logger.exception("call failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert OTHER_SECRET not in text
    first, second, third = json_lines(stream)
    assert first["message"] == "token *** in the format string"
    assert second["message"] == "key *** in an argument"
    assert "Bearer ***" in str(third["exception"])
    assert "Traceback" in str(third["exception"])


def test_secrets_are_redacted_in_text_lines_and_stack_info(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.TextFormatter())
    try:
        raise ValueError(SECRET)
    except ValueError:
        logger.exception("failed with %s", OTHER_SECRET)
    logger.info("where am I, %s?", SECRET, stack_info=True)
    text = stream.getvalue()
    assert SECRET not in text
    assert OTHER_SECRET not in text
    assert "ValueError: ***" in text


def test_a_text_line_is_readable_and_ends_with_the_record(
    capture: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.TextFormatter())
    with logs.bound(entity="products", record_id="P-9", task_id="abc", task_name="wavesync.sync.products"):
        logger.warning("retrying")
    line = stream.getvalue().strip()
    assert " WARNING " in line
    assert line.endswith("retrying [entity=products record_id=P-9 task_id=abc]")


def test_configure_installs_one_root_handler_that_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json", [SECRET])
        with logs.bound(entity="customers", record_id="5"):
            logging.getLogger("wavesync.anything").info("using %s", SECRET)
        [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        assert line["message"] == "using ***"
        assert line["entity"] == "customers"
        assert len(root.handlers) == 1
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_redact_replaces_every_occurrence_and_ignores_empty_secrets() -> None:
    assert logs.redact(f"{SECRET}/{SECRET}", ["", SECRET]) == "***/***"
