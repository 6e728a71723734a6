"""The command line as a user meets it: help, bad settings, the compose file's commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sandboxes.serve import free_port
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMMANDS = [
    "up",
    "worker",
    "beat",
    "celery",
    "sandbox",
    "db",
    "status",
    "reconcile",
    "demo",
    "dlq",
    "doctor",
    "connect",
    "console",
    "history",
]


def wavesync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=REPO,
    )


def test_help_lists_every_command_with_one_line() -> None:
    result = wavesync("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert any(line.strip("│ ").startswith(f"{command} ") for line in result.stdout.splitlines()), command


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WAVESYNC_REDIS_URL", "nope", "WAVESYNC_REDIS_URL"),
        ("WAVESYNC_POLL_INTERVAL", "-3", "WAVESYNC_POLL_INTERVAL"),
        ("WAVESYNC_DATABASE_URL", "mysql://x", "WAVESYNC_DATABASE_URL"),
        ("WAVESYNC_CONFLICT_POLICY_ORDERS", "coin_flip", "WAVESYNC_CONFLICT_POLICY_ORDERS"),
        # A list that is not JSON fails before validation, in pydantic-settings' own parsing.
        ("WAVESYNC_CREATE_IN_WAVE", "customers", "WAVESYNC_CREATE_IN_WAVE"),
        # Would pass `> 0` and overflow later, in beat's schedule.
        ("WAVESYNC_POLL_INTERVAL", "inf", "WAVESYNC_POLL_INTERVAL"),
        ("WAVESYNC_POLL_INTERVAL", "1e300", "WAVESYNC_POLL_INTERVAL"),
        ("WAVESYNC_RETRY_BACKOFF_BASE", "500", "must not exceed WAVESYNC_RETRY_BACKOFF_MAX"),
        ("WAVESYNC_WAVE_CURRENCY", "usd", "three-letter ISO 4217 code in capitals, e.g. USD (not 'usd')"),
        ("WAVESYNC_CONSOLE_TLS_CERT", "/etc/hostname", "WAVESYNC_CONSOLE_TLS_KEY is required"),
    ],
)
def test_a_bad_setting_is_one_clear_line_and_exit_2(variable: str, value: str, named: str) -> None:
    result = wavesync("status", env={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


def compose_services() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return services


def wavesync_services() -> list[str]:
    return sorted(n for n, s in compose_services().items() if str(s.get("command", [""])).startswith("['wavesync'"))


@pytest.mark.parametrize("name", wavesync_services())
def test_every_compose_command_is_a_real_command(name: str) -> None:
    command = list(compose_services()[name]["command"])  # type: ignore[call-overload]
    # Stop before any option so `--help` reaches the command itself (Celery roles take Celery's --help).
    words = [w for w in command[1:] if not w.startswith("-")][: 1 if command[1] != "db" else 2]
    if command[1] == "celery":
        words = ["celery", command[2], "--help"]
    else:
        words = [*words, "--wavesync-help" if command[1] in ("worker", "beat") else "--help"]
    result = wavesync(*words)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_compose_variable_is_a_setting() -> None:
    fields = {f"WAVESYNC_{name.upper()}" for name in Settings.model_fields}
    text = (REPO / "docker-compose.yml").read_text()
    data = yaml.safe_load(text)
    seen = set()
    for service in data["services"].values():
        env = service.get("environment") or {}
        seen |= {k for k in env if k.startswith("WAVESYNC_")}
    assert seen, "the compose file sets no WAVESYNC_ variables"
    assert seen <= fields, seen - fields


def test_a_real_system_url_without_its_own_credential_is_refused() -> None:
    result = wavesync("status", env={"WAVESYNC_WAVE_URL": "https://gql.waveapps.com/graphql/public"})
    assert result.returncode == 2
    assert "WAVESYNC_WAVE_TOKEN is required" in result.stderr


def test_a_misspelt_setting_is_named_with_the_one_meant() -> None:
    result = wavesync("status", env={"WAVESYNC_POLL_INTERVALL": "5", "WAVESYNC_SOAK_SEED": "3"})
    lines = result.stderr.splitlines()
    assert "WAVESYNC_POLL_INTERVALL is not a setting (ignored): did you mean WAVESYNC_POLL_INTERVAL?" in lines
    assert not any("SOAK_SEED" in line for line in lines)  # not close to any setting: another tool's, left alone


def test_the_sandbox_credential_is_refused_for_a_real_system() -> None:
    # What compose passes when the operator set the URL but forgot the key: its default is the sandbox's.
    result = wavesync(
        "status",
        env={
            "WAVESYNC_CUSTOMERP_URL": "https://erp.example.com",
            "WAVESYNC_CUSTOMERP_API_KEY": "sandbox-customerp-key",
        },
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wavesync: invalid settings: WAVESYNC_CUSTOMERP_API_KEY is the sandbox's published value, but "
        "WAVESYNC_CUSTOMERP_URL points at erp.example.com: set that system's own credential"
    ]


def test_db_upgrade_makes_a_fresh_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "not" / "there" / "yet"
    result = wavesync("db", "upgrade", env={"WAVESYNC_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert (data / "wavesync.db").is_file()


@pytest.mark.parametrize("command", [("status",), ("history", "customers", "1"), ("db", "upgrade")])
def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = wavesync(*command, env={"WAVESYNC_DATA_DIR": str(a_file / "data")})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("wavesync: cannot open the link store (Not a directory"), line
    assert "WAVESYNC_DATA_DIR" in line


def test_an_operator_tool_without_redis_is_one_line(tmp_path: Path) -> None:
    env = {"WAVESYNC_DATA_DIR": str(tmp_path)}
    assert wavesync("db", "upgrade", env=env).returncode == 0
    unset = wavesync("celery", "inspect", "ping", env=env)
    assert unset.returncode == 2
    assert unset.stderr.strip().splitlines() == [
        "wavesync: WAVESYNC_REDIS_URL is not set: set it to your Redis, or to the address a running `wavesync up` "
        "printed (`embedded Valkey on redis://...`)"
    ]
    down = wavesync(
        "reconcile", "--check", env={**env, "WAVESYNC_REDIS_URL": f"redis://:pw-not-shown@127.0.0.1:{free_port()}/0"}
    )
    assert down.returncode == 1, down.stderr
    assert "Traceback" not in down.stderr
    assert "pw-not-shown" not in down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("wavesync: cannot reach Redis (")


def test_a_missing_console_tls_file_is_one_line(tmp_path: Path) -> None:
    env = {
        "WAVESYNC_DATA_DIR": str(tmp_path),
        "WAVESYNC_CONSOLE_PASSWORD": "a-long-enough-password",
        "WAVESYNC_CONSOLE_TLS_CERT": str(tmp_path / "cert.pem"),
        "WAVESYNC_CONSOLE_TLS_KEY": str(tmp_path / "key.pem"),
    }
    result = wavesync("console", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"wavesync: WAVESYNC_CONSOLE_TLS_CERT names no readable file: {tmp_path / 'cert.pem'}"
    ]


def test_a_console_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "WAVESYNC_DATA_DIR": str(tmp_path),
            "WAVESYNC_CONSOLE_PASSWORD": "a-long-enough-password",
            "WAVESYNC_CONSOLE_PORT": str(port),
        }
        result = wavesync("console", env=env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"wavesync: cannot serve the console on 127.0.0.1:{port} (")
    assert line.endswith("Set WAVESYNC_CONSOLE_PORT")


def test_the_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [f"WAVESYNC_{name.upper()}" for name in Settings.model_fields if f"WAVESYNC_{name.upper()}" not in readme]
    assert missing == []
