"""Refreshes the vendored Wave reference dumps in sandboxes/wave/reference/ from their public sources, and SOURCE.md.

Each dump is fetched from its public repository at a pinned commit (or read from a folder holding files of the same
names, `--from DIR`), checked to be the kind of document the merge in sandboxes/wave/reference_schema.py expects,
written unchanged, and recorded in SOURCE.md with its sha256 and the date. Afterwards regenerate the sandbox SDL
(`python -m sandboxes.wave.build_schema > sandboxes/wave/schema.graphql`) and run tests/shared/wave.

Usage, from the repository root:
    python scripts/refresh_wave_schema.py                 # from the public repositories (needs the network)
    python scripts/refresh_wave_schema.py --from DIR      # from DIR/schema-2021.introspection.json, ...
    python scripts/refresh_wave_schema.py --check         # the vendored files still match SOURCE.md's digests
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "sandboxes" / "wave" / "reference"


@dataclass(frozen=True)
class Source:
    file: str  # the name in sandboxes/wave/reference/
    repository: str
    commit: str
    path: str
    licence: str
    what: str

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.path}"

    @property
    def page(self) -> str:
        return f"https://github.com/{self.repository}/blob/{self.commit}/{self.path}"


SOURCES = (
    Source(
        file="schema-2021.introspection.json",
        repository="xclydes/longboard",
        commit="93b2a08032013766e8184ef88f68daae981f9fcd",
        path="src/main/graphql/com/xclydes/finance/longboard/wave/schema.json",
        licence="none stated; the content is the answer of Wave's public introspection endpoint",
        what="the full introspection result of Wave's public GraphQL schema as of 2021-04-17",
    ),
    Source(
        file="input-types-2026.json",
        repository="gabgren/wave_mcp",
        commit="be05afa21e274eb2eeb43e7e82f66af53a886327",
        path="wave_schema.json",
        licence="MIT (the repository's LICENSE file)",
        what="Wave's input types and enums as of 2026-04-27 (adds `InvoicePatchInput`, payments, discounts)",
    ),
)


def check_shape(source: Source, document: Any) -> None:
    """Refuse a file that is not the kind of dump the merge reads (a moved path, an error page, a new format)."""
    if source.file == "schema-2021.introspection.json":
        ok = isinstance(document, dict) and isinstance(document.get("data", {}).get("__schema", {}).get("types"), list)
    else:
        ok = isinstance(document, dict) and {"input_types", "enums"} <= set(document)
    if not ok:
        raise SystemExit(f"{source.file}: not the expected document ({source.page})")


def fetch(source: Source, from_dir: Path | None) -> bytes:
    try:
        if from_dir is not None:
            return (from_dir / source.file).read_bytes()
        with urllib.request.urlopen(source.url, timeout=60) as response:  # noqa: S310 (a fixed https URL)
            body: bytes = response.read()
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors too
        raise SystemExit(f"{source.file}: cannot read {from_dir or source.url}: {exc}") from None
    return body


def source_note(digests: dict[str, str], today: datetime.date, origin: str) -> str:
    lines = [
        "# Where the Wave reference dumps come from",
        "",
        "Public data, vendored unchanged so the contract tests and `sandboxes/wave/build_schema.py` need nothing",
        "outside this repository. `sandboxes/wave/reference_schema.py` merges the two (2021 base, 2026 input",
        "types and enums, plus `invoicePatch`). Refresh with `make refresh-wave-schema` (or",
        "`python scripts/refresh_wave_schema.py [--from DIR]`), then regenerate `schema.graphql` and run",
        "`tests/shared/wave`.",
        "",
        f"Fetched {today.isoformat()} ({origin}).",
        "",
        "| file | what | source | licence | sha256 |",
        "|---|---|---|---|---|",
    ]
    for source in SOURCES:
        lines.append(
            f"| `{source.file}` | {source.what} | {source.page} | {source.licence} | `{digests[source.file]}` |"
        )
    return "\n".join(lines) + "\n"


def recorded_digests(note: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in note.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in {s.file for s in SOURCES}:
            found[cells[0]] = cells[4]
    return found


def check(target: Path = TARGET) -> list[str]:
    """The vendored files whose bytes no longer match the digest SOURCE.md records."""
    recorded = recorded_digests((target / "SOURCE.md").read_text(encoding="utf-8"))
    problems = []
    for source in SOURCES:
        path = target / source.file
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "(missing)"
        if recorded.get(source.file) != actual:
            problems.append(f"{source.file}: sha256 {actual}, SOURCE.md records {recorded.get(source.file)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--from", dest="from_dir", type=Path, help="read the dumps from this folder, not the network")
    parser.add_argument("--check", action="store_true", help="only verify the vendored files against SOURCE.md")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(f"wave reference: {line}", file=sys.stderr)
        return 1 if problems else 0
    digests: dict[str, str] = {}
    bodies: dict[str, bytes] = {}
    for source in SOURCES:
        body = fetch(source, args.from_dir)
        check_shape(source, json.loads(body))
        bodies[source.file] = body
        digests[source.file] = hashlib.sha256(body).hexdigest()
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():  # written only once every dump has been read and checked
        (TARGET / name).write_bytes(body)
    origin = "read from a local copy of the files below" if args.from_dir else "downloaded from the sources below"
    note = source_note(digests, datetime.datetime.now(datetime.UTC).date(), origin)
    (TARGET / "SOURCE.md").write_text(note, encoding="utf-8")
    for name, digest in digests.items():
        print(f"{name}: sha256 {digest}")
    print("now: python -m sandboxes.wave.build_schema > sandboxes/wave/schema.graphql, then pytest tests/shared/wave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
