"""docker-compose.yml read the way Docker Compose reads it, and its wavesync services run as local processes.

No Docker engine runs on the development machines, so this stands in for the parts of it the services notice:

- the file: YAML merge keys (`<<: *wavesync`), `${VAR:-default}` interpolation from an empty shell (an operator
  who overrides nothing), `profiles`, `depends_on` conditions; the image's `USER` and `ENV` from the Dockerfile;
- the network: every container has its own ports and `0.0.0.0` means its own interfaces. Here all services share
  the machine's, so each listening port a service is configured with (a `*_PORT` variable or a `*_port` setting)
  becomes a free loopback port, `0.0.0.0` becomes `127.0.0.1`, and the host:port of URLs naming a service
  (`redis:6379`, `sandboxes:8701`) becomes that service's loopback port. Commands are never rewritten;
- volumes: a named volume is one fresh directory owned by the services' user, and the environment value that
  names the mount point (WAVESYNC_DATA_DIR) names that directory instead;
- the user: the image runs as an unprivileged user in a root-owned /app; here an unprivileged account (`nobody`)
  runs each service in the root-owned project directory (see `Identity`).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sandboxes.serve import free_port
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s/?#]+)")
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "http": 80, "https": 443}
ANY_ADDRESS = "0.0.0.0"


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`."""

    def one(match: re.Match[str]) -> str:
        escaped, name, operator, argument, bare = match.groups()
        if escaped:
            return "$"
        name = name or bare
        value = variables.get(name)
        if operator in (":-", "-"):
            unset = value is None or (operator == ":-" and value == "")
            return argument if unset else str(value)
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                raise ValueError(f"compose: required variable {name} is missing: {argument}")
            return value
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load(path: Path = COMPOSE_FILE, variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose sees it; `variables` is the shell it is interpolated from (default: empty)."""
    # SafeLoader resolves merge keys and anchors, as compose's YAML parser does.
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    resolved: dict[str, Any] = _interpolate_tree(document, variables or {})
    return resolved


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @classmethod
    def parse(cls, spec: str | dict[str, Any]) -> Mount:
        if isinstance(spec, dict):
            return cls(str(spec.get("source", "")), str(spec["target"]), bool(spec.get("read_only", False)))
        parts = spec.split(":")
        if len(parts) == 1:  # an anonymous volume
            return cls("", parts[0], False)
        return cls(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(","))


@dataclass(frozen=True)
class Service:
    name: str
    definition: dict[str, Any]
    image_env: dict[str, str]
    image_user: str | None

    @property
    def builds_project(self) -> bool:
        """Runs this repository's image (a wavesync service) rather than a third-party one (redis, postgres)."""
        return "build" in self.definition

    @property
    def command(self) -> list[str]:
        command = self.definition.get("command", [])
        return [str(part) for part in command] if isinstance(command, list) else str(command).split()

    @property
    def environment(self) -> dict[str, str]:
        """The image's ENV overlaid with the service's `environment` (mapping or list form)."""
        env = dict(self.image_env) if self.builds_project else {}
        given = self.definition.get("environment") or {}
        if isinstance(given, list):
            given = dict(item.split("=", 1) if "=" in item else (item, "") for item in given)
        env.update({str(k): "" if v is None else str(v) for k, v in given.items()})
        return env

    @property
    def user(self) -> str | None:
        """Who the container runs as: `user:` or else the image's last USER (None = root, Docker's default)."""
        given = self.definition.get("user")
        if given is not None:
            return str(given)
        return self.image_user if self.builds_project else None

    @property
    def mounts(self) -> list[Mount]:
        return [Mount.parse(spec) for spec in self.definition.get("volumes", [])]

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(self.definition.get("profiles", ()))

    @property
    def depends_on(self) -> dict[str, str]:
        given = self.definition.get("depends_on") or {}
        if isinstance(given, list):
            return dict.fromkeys(given, "service_started")
        return {name: (spec or {}).get("condition", "service_started") for name, spec in given.items()}

    @property
    def restart(self) -> str:
        return str(self.definition.get("restart", "no"))


def dockerfile_facts(path: Path = DOCKERFILE) -> tuple[dict[str, str], str | None]:
    """The final stage's ENV values and USER (None when it sets none: root)."""
    env: dict[str, str] = {}
    user: str | None = None
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        instruction, rest = words[0].upper(), (words[1] if len(words) > 1 else "")
        if instruction == "FROM":
            env, user = {}, None
        elif instruction == "USER":
            user = rest.strip()
        elif instruction == "ENV":
            if "=" in rest.split(None, 1)[0]:
                for pair in re.findall(r"""(\w+)=("[^"]*"|'[^']*'|\S+)""", rest):
                    env[pair[0]] = pair[1].strip("\"'")
            else:
                key, _, value = rest.partition(" ")
                env[key] = value.strip()
    return env, user


def services(compose: Mapping[str, Any]) -> dict[str, Service]:
    image_env, image_user = dockerfile_facts()
    return {
        name: Service(name, definition or {}, image_env, image_user) for name, definition in compose["services"].items()
    }


def one_shot_jobs(all_services: Mapping[str, Service]) -> set[str]:
    """Services others wait for to finish (`service_completed_successfully`), like the migration."""
    return {
        name
        for service in all_services.values()
        for name, condition in service.depends_on.items()
        if condition == "service_completed_successfully"
    }


# --- who runs the services -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """How a service process is started: as an unprivileged account when the tests run as root.

    `prefix` wraps the command when the account cannot run the interpreter on its own: a Python under /root
    (mode 700, as pyenv installs it) cannot be reached by `nobody`; setpriv then gives the account only
    CAP_DAC_READ_SEARCH (read and traverse anything, write nothing it does not own), so the write permissions the
    test is about still hold."""

    uid: int | None
    gid: int | None
    home: str
    prefix: tuple[str, ...] = ()
    note: str = ""

    @property
    def unprivileged(self) -> bool:
        return self.uid not in (None, 0)

    def popen_args(self) -> dict[str, Any]:
        if self.prefix or self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def argv(self, command: Iterable[str]) -> list[str]:
        return [*self.prefix, *command]

    def can_run_python(self, env: Mapping[str, str]) -> bool:
        try:
            probe = subprocess.run(
                # What a service needs, checked the way its libraries check: alembic tests its migrations folder with
                # os.access, which ignores capabilities, so under a checkout the account cannot traverse (a mktemp -d
                # clone is mode 700) the setpriv route fails here rather than in `migrate`.
                self.argv([sys.executable, "-c", _CAN_RUN_A_SERVICE]),
                env=dict(env),
                cwd=REPO,
                capture_output=True,
                timeout=60,
                check=False,
                **self.popen_args(),
            )
        except OSError:
            return False
        return probe.returncode == 0


_CAN_RUN_A_SERVICE = (
    "import os, sys, wavesync; from shared.store.db import MIGRATIONS; "
    "sys.exit(0 if os.access(MIGRATIONS, os.R_OK | os.X_OK) else 3)"
)


def choose_identity(account: str = "nobody") -> Identity:
    """`account` when running as root and the machine lets it run our Python; else this user, with a note why."""
    me = pwd.getpwuid(os.geteuid())
    if os.geteuid() != 0:
        return Identity(None, None, me.pw_dir, note=f"not root: the services run as {me.pw_name}, like the tests")
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        return Identity(None, None, me.pw_dir, note=f"no {account!r} account: the services run as root")
    env = base_env(entry.pw_dir)
    plain = Identity(entry.pw_uid, entry.pw_gid, entry.pw_dir)
    if plain.can_run_python(env):
        return plain
    setpriv = shutil.which("setpriv")
    if setpriv:
        ids = (f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups")
        caps = ("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
        wrapped = Identity(
            entry.pw_uid,
            entry.pw_gid,
            entry.pw_dir,
            prefix=(setpriv, *ids, *caps, "--"),
            note=f"{sys.executable} is out of {account}'s reach: {account} runs with CAP_DAC_READ_SEARCH only",
        )
        if wrapped.can_run_python(env):
            return wrapped
    return Identity(None, None, me.pw_dir, note=f"{account} cannot run {sys.executable} here: the services run as root")


def base_env(home: str) -> dict[str, str]:
    """What a container starts with before the image's and the service's variables: no WAVESYNC_* of ours."""
    # The image puts `wavesync` on PATH; here it is the virtualenv's entry point.
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    return {"PATH": path, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


# --- the stand-in for the container network --------------------------------------------------------------------


def _free_port_pair(taken: set[int]) -> int:
    """A free port whose successor is free too (beat serves its metrics on WAVESYNC_METRICS_PORT + 1)."""
    for _ in range(100):
        port = free_port()
        if port in taken or port + 1 in taken or port + 1 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        taken.update((port, port + 1))
        return port
    raise RuntimeError("no two adjacent free ports")


def _listening_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Every port the service is configured to listen on: `*_PORT` variables and non-zero `*_port` settings."""
    ports: dict[str, int] = {}
    for name, spec in Settings.model_fields.items():
        variable = f"WAVESYNC_{name.upper()}"
        if name.endswith("_port") and variable not in env and isinstance(spec.default, int) and spec.default:
            ports[variable] = spec.default
    for variable, value in env.items():
        if variable.endswith("_PORT") and value.strip().isdigit() and int(value):
            ports[variable] = int(value)
    return ports


@dataclass
class HostNetwork:
    """Published addresses: (service, port it listens on) -> loopback port."""

    published: dict[tuple[str, int], int] = field(default_factory=dict)
    _taken: set[int] = field(default_factory=set)

    def publish(self, service: str, port: int, host_port: int | None = None) -> int:
        if host_port is None:
            host_port = _free_port_pair(self._taken)
        self.published[(service, port)] = host_port
        self._taken.update((host_port, host_port + 1))
        return host_port

    def rewrite_url_hosts(self, value: str) -> str:
        """The host:port of every URL naming a service, as its loopback address; nothing else changes."""

        def one(match: re.Match[str]) -> str:
            scheme, netloc = match.group(1), match.group(2)
            userinfo, _, hostport = netloc.rpartition("@")
            parts = urlsplit(f"{scheme}://{hostport}")
            host = parts.hostname or ""
            if not any(service == host for service, _ in self.published):
                return match.group(0)
            port = parts.port or _DEFAULT_PORTS.get(scheme)
            if port is None or (host, port) not in self.published:
                raise AssertionError(f"{match.group(0)}: service {host!r} does not listen on port {port}")
            local = f"127.0.0.1:{self.published[(host, port)]}"
            return f"{scheme}://{userinfo + '@' if userinfo else ''}{local}"

        return _URL.sub(one, value)


@dataclass(frozen=True)
class Runnable:
    """One service ready to start: its command and the environment it gets here."""

    name: str
    command: list[str]
    env: dict[str, str]
    listening: dict[str, int]  # variable -> loopback port (e.g. FLOWER_PORT)


@dataclass
class Plan:
    """Every wavesync service of the file (with the given profiles), translated for this machine."""

    services: dict[str, Service]
    runnable: dict[str, Runnable]
    volumes: dict[str, Path]
    network: HostNetwork


def plan(
    compose: Mapping[str, Any],
    identity: Identity,
    stand_ins: Mapping[tuple[str, int], int],
    profiles: Iterable[str] = (),
) -> Plan:
    """`stand_ins` publishes the third-party services the test runs itself, e.g. {("redis", 6379): 54321}."""
    enabled = set(profiles)
    all_services = services(compose)
    chosen = {
        name: s
        for name, s in all_services.items()
        if s.builds_project and (not s.profiles or enabled.intersection(s.profiles))
    }
    network = HostNetwork()
    for (host, port), host_port in stand_ins.items():
        network.publish(host, port, host_port)
    listening: dict[str, dict[str, int]] = {}
    for name, service in chosen.items():
        listening[name] = {}
        for variable, port in _listening_ports(service.environment).items():
            listening[name][variable] = network.publish(name, port)
    volumes: dict[str, Path] = {}
    runnable: dict[str, Runnable] = {}
    for name, service in chosen.items():
        env = base_env(identity.home)
        for variable, value in service.environment.items():
            env[variable] = "127.0.0.1" if value == ANY_ADDRESS else network.rewrite_url_hosts(value)
        env.update({variable: str(port) for variable, port in listening[name].items()})
        for mount in service.mounts:
            if not mount.source or mount.source.startswith((".", "/")):
                continue  # bind mounts and anonymous volumes: none of ours
            if mount.source not in volumes:
                volumes[mount.source] = _volume_dir(mount.source, identity)
            for variable, value in list(env.items()):
                if value == mount.target or value.startswith(mount.target.rstrip("/") + "/"):
                    env[variable] = str(volumes[mount.source]) + value[len(mount.target.rstrip("/")) :]
        runnable[name] = Runnable(name, service.command, env, listening[name])
    return Plan(chosen, runnable, volumes, network)


def _volume_dir(volume: str, identity: Identity) -> Path:
    # Under the shared /tmp, not pytest's tmp_path: that lives in a directory only root may enter.
    path = Path(tempfile.mkdtemp(prefix=f"wavesync-{volume}-"))
    if identity.uid is not None:
        os.chown(path, identity.uid, identity.gid if identity.gid is not None else -1)
    return path


# --- running them ----------------------------------------------------------------------------------------------


class Stack:
    """The planned services as processes, each logging to `logs/<service>.log`; stopped by their own pids."""

    def __init__(self, the_plan: Plan, identity: Identity, logs: Path) -> None:
        self.plan = the_plan
        self.identity = identity
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, extra: Iterable[str] = ()) -> subprocess.Popen[bytes]:
        service = self.plan.runnable[name]
        with (self.logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                self.identity.argv([*service.command, *extra]),
                env=service.env,
                cwd=REPO,  # the image's WORKDIR: the project, not writable by the service's user
                stdout=log,
                stderr=subprocess.STDOUT,
                **self.identity.popen_args(),
            )

    def run(self, name: str, command: list[str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
        """Like `docker compose run --rm <name> [command]`: the service's environment, to completion.
        Returns the exit status, stdout and stderr."""
        service = self.plan.runnable[name]
        completed = subprocess.run(
            self.identity.argv(command or service.command),
            env=service.env,
            cwd=REPO,
            capture_output=True,
            timeout=timeout,
            check=False,
            **self.identity.popen_args(),
        )
        out, err = completed.stdout.decode(errors="replace"), completed.stderr.decode(errors="replace")
        with (self.logs / f"{name}.run.log").open("a") as log:
            log.write(f"$ {' '.join(command or service.command)} -> {completed.returncode}\n{out}{err}\n")
        return completed.returncode, out, err

    def start(self, name: str) -> None:
        self.processes[name] = self._spawn(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(30)
        if process.poll() is None:
            process.kill()
            process.wait()

    def dead(self) -> dict[str, int]:
        """Long-running services that exited (compose would restart them; here that is a failure)."""
        return {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}

    def log_tail(self, names: Iterable[str] | None = None, chars: int = 2500) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            if names is None or path.name.split(".")[0] in set(names):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        # The test is over: no graceful shutdown to wait for (about 1.5 s per worker).
        for name in list(self.processes):
            self.kill(name)
        for path in self.plan.volumes.values():
            shutil.rmtree(path, ignore_errors=True)


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.5) -> float:
    """Seconds it took `condition()` to hold; AssertionError (naming `what`) after `timeout`."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
