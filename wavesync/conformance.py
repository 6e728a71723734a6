"""The Customerp contract kit: checks an ERP's API against docs/customerp-api.md over plain HTTP, check by check.

Read-only by default (change-feed order and cursor exactness, inclusive `updated_since`, tombstones, ETags, 404s,
exact list filters, the problem shape of a bad query). `write_checks=True` also creates customers named
`wavesync-conformance-<run>-…`, exercises Idempotency-Key, If-Match, merge patch, versions and no-op writes on them,
and deletes them afterwards (twins that a non-conforming create made included, but never a record whose own
company_name lacks the run's prefix). Each check is a `wavesync.doctor.Check` in area `contract`; an answer of the
wrong shape is a ✗ of its check, never a traceback that would stop the run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from shared.settings import ENTITIES, Settings
from wavesync.doctor import Check, fail, ok, warn

AREA = "contract"
SCRATCH_PREFIX = "wavesync-conformance-"
SMALL_PAGE = 2  # many page boundaries, so ties at a boundary are met
WALK_LIMIT = 400  # records compared per resource; enough to meet ties, bounded on a big ERP
BIG_PAGE = 500
ETAG = re.compile(r'(?:W/)?"([0-9]+)"')
PROBLEM_KEYS = ("type", "title", "status", "detail", "code")
CONTRACT = "docs/customerp-api.md"


class _Failed(Exception):
    """A check's finding: raised inside a check body, turned into its ✗ line."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass
class _Api:
    http: httpx.Client
    key: str
    created: list[str] = field(default_factory=list)  # scratch customer ids to delete

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key, **kwargs.pop("headers", {})}
        return self.http.request(method, f"/api/v1/{path}", headers=headers, **kwargs)

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def feed(self, resource: str, limit: int, *, since: str | None = None, most: int = WALK_LIMIT) -> list[Any]:
        """Walk the feed from the start (or `since`) by cursor; at most `most` items."""
        items: list[Any] = []
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["updated_since"] = since
        seen_cursors: set[str] = set()
        while len(items) < most:
            response = self.request("GET", f"{resource}/changes", params=params)
            page = self.json(response)
            if response.status_code != 200 or not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise _Failed(
                    f"{resource} change feed answered HTTP {response.status_code} without a page",
                    f"Serve GET /api/v1/{resource}/changes as {CONTRACT} (Change feed) describes.",
                )
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not page.get("has_more"):
                break
            if not isinstance(cursor, str) or cursor in seen_cursors:
                raise _Failed(
                    f"{resource} change feed says has_more but repeats or omits its cursor",
                    "Return a next_cursor that encodes the (updated_at, id) of the page's last item.",
                )
            seen_cursors.add(cursor)
            params = {"limit": limit, "cursor": cursor}
        return items[:most]


def _key(item: Any) -> tuple[str, str]:
    return (str(item.get("updated_at")), str(item.get("id"))) if isinstance(item, dict) else ("", "")


# ----- read-only checks ------------------------------------------------------------------------------------------


def check_feed_exact(api: _Api, resource: str) -> str:
    small = api.feed(resource, SMALL_PAGE)
    big = api.feed(resource, BIG_PAGE, most=len(small))
    ids = [_key(i)[1] for i in small]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise _Failed(
            f"{resource} feed repeats {', '.join(repeated[:3])} across pages of {SMALL_PAGE}",
            "Start the next page strictly after the (updated_at, id) the cursor encodes.",
        )
    keys = [_key(i) for i in small]
    if keys != sorted(keys):
        raise _Failed(
            f"{resource} feed is not ordered by (updated_at, id)",
            "Order the change feed by updated_at, then id.",
        )
    missing = [_key(i)[1] for i in big if _key(i)[1] not in set(ids)]
    if missing:
        raise _Failed(
            f"{resource} feed skips {len(missing)} record(s) at page boundaries (e.g. {missing[0]}) when pages "
            f"hold {SMALL_PAGE}",
            "Make the cursor encode (updated_at, id) and compare both, so records sharing an updated_at survive.",
        )
    stamps = [k[0] for k in keys]
    ties = len(stamps) - len(set(stamps))
    if not small:
        return f"{resource} feed is empty: ordering and cursors not exercised"
    how = f"{ties} shared updated_at value(s) met" if ties else "no records share an updated_at (ties not met)"
    return f"{resource} feed: {len(small)} item(s) over pages of {SMALL_PAGE}, none skipped or repeated; {how}"


def check_updated_since_inclusive(api: _Api, resource: str) -> str:
    items = api.feed(resource, BIG_PAGE, most=WALK_LIMIT)
    if not items:
        return f"{resource} feed is empty: updated_since not exercised"
    probe = items[len(items) // 2]
    stamp, record_id = _key(probe)
    found = api.feed(resource, BIG_PAGE, since=stamp, most=WALK_LIMIT)
    if record_id not in {_key(i)[1] for i in found}:
        raise _Failed(
            f"{resource} feed with updated_since={stamp} leaves out {record_id}, updated at exactly that time",
            "Make updated_since inclusive (updated_at >= updated_since).",
        )
    if any(_key(i)[0] < stamp for i in found):
        raise _Failed(
            f"{resource} feed with updated_since={stamp} returns older records",
            "Filter the change feed on updated_at >= updated_since.",
        )
    return f"{resource} updated_since is inclusive"


def _tombstone_shape(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and set(item) >= {"id", "deleted", "version", "updated_at"}
        and item["deleted"] is True
        and isinstance(item["version"], int)
    )


def check_tombstones_in_feed(api: _Api, resource: str) -> str | None:
    """Tombstones already in the feed have the contract's shape and 404 on GET; None when there are none."""
    items = api.feed(resource, BIG_PAGE, most=WALK_LIMIT)
    stones = [i for i in items if isinstance(i, dict) and i.get("deleted")]
    if not stones:
        return None
    bad = [i for i in stones if not _tombstone_shape(i)]
    if bad:
        raise _Failed(
            f"{resource} tombstone {_key(bad[0])[1]} lacks id/deleted/version/updated_at",
            'Serve a deleted record as {"id", "deleted": true, "version", "updated_at"}.',
        )
    gone = api.request("GET", f"{resource}/{stones[0]['id']}")
    if gone.status_code != 404:
        raise _Failed(
            f"{resource} {stones[0]['id']} is a tombstone in the feed but GET answers {gone.status_code}",
            "Answer 404 for a deleted record.",
        )
    return f"{resource}: {len(stones)} tombstone(s) in the feed, each with the contract's shape"


def check_etag(api: _Api, resource: str) -> str:
    items = [i for i in api.feed(resource, BIG_PAGE, most=50) if isinstance(i, dict) and not i.get("deleted")]
    if not items:
        return f"{resource} has no live record: ETag not exercised"
    record = items[-1]
    response = api.request("GET", f"{resource}/{record['id']}")
    body = api.json(response)
    tag = ETAG.fullmatch(response.headers.get("etag", "").strip())
    if response.status_code != 200 or not isinstance(body, dict):
        raise _Failed(
            f"GET {resource}/{record['id']} answered {response.status_code}",
            "Serve every record in the feed at GET /api/v1/{resource}/{id}.",
        )
    if tag is None:
        raise _Failed(
            f'GET {resource}/{record["id"]} has no ETag of the form "<version>"',
            'Send ETag: "<version>" with every record (GET, create, patch).',
        )
    if int(tag.group(1)) != body.get("version"):
        raise _Failed(
            f"ETag {tag.group(0)} of {resource}/{record['id']} is not its version {body.get('version')}",
            'Make the ETag the record\'s version in quotes, e.g. "3".',
        )
    return f'{resource} records carry ETag "<version>"'


def _problem(response: httpx.Response, api: _Api) -> dict[str, Any] | None:
    body = api.json(response)
    if not isinstance(body, dict) or any(k not in body for k in PROBLEM_KEYS):
        return None
    if "problem+json" not in response.headers.get("content-type", ""):
        return None
    return body


def check_not_found(api: _Api, resource: str) -> str:
    response = api.request("GET", f"{resource}/{SCRATCH_PREFIX}no-such-record")
    if response.status_code != 404 or _problem(response, api) is None:
        raise _Failed(
            f"GET of an unknown {resource} id answered {response.status_code}"
            + ("" if response.status_code != 404 else " without a problem document"),
            "Answer 404 with an application/problem+json body (type, title, status, detail, code).",
        )
    return f"unknown {resource} ids answer 404 with a problem document"


def check_list_filter(api: _Api) -> str:
    name = f"{SCRATCH_PREFIX}no-such-record"
    response = api.request("GET", "customers", params={"company_name": name})
    body = api.json(response)
    items = body.get("items") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(items, list):
        raise _Failed(
            f"GET customers?company_name=… answered {response.status_code} without a page of items",
            f"Serve GET /api/v1/customers with its filters as {CONTRACT} (Endpoints) describes.",
        )
    if items:
        raise _Failed(
            f"GET customers?company_name={name} listed {len(items)} customer(s) though none has that name: "
            "the filter is ignored",
            "Apply each list filter as an exact match, so a lookup finds only the records asked for.",
        )
    return "customers: a company_name filter lists only the records that match it"


def check_bad_query(api: _Api, resource: str) -> str:
    response = api.request("GET", f"{resource}/changes", params={"updated_since": "not-a-time"})
    problem = _problem(response, api)
    errors = problem.get("errors") if problem else None
    if response.status_code != 400 or not isinstance(errors, list) or not errors:
        raise _Failed(
            f"a malformed updated_since answered {response.status_code}"
            + ("" if problem else " without a problem document"),
            'Answer 400 application/problem+json with errors [{"path", "message", "code"}] for a bad parameter.',
        )
    if not all(isinstance(e, dict) and {"path", "message", "code"} <= set(e) for e in errors):
        raise _Failed("a bad query's problem lists errors without path/message/code", "Give each error a path.")
    return f"{resource}: a bad query answers 400 with a problem document naming the parameter"


# ----- write checks, on scratch customers ------------------------------------------------------------------------


def _scratch_body(name: str) -> dict[str, Any]:
    return {
        "company_name": name,
        "email": f"{name}@example.invalid",
        "notes": "created by wavesync doctor customerp --conformance --write-checks; deleted by it",
        "billing_address": {"line1": "1 Conformance Way", "city": "Testville", "country_code": "NO"},
    }


def _scratch(api: _Api, run: str, purpose: str) -> dict[str, Any]:
    """A new scratch customer for one write check (deleted with the others at the end)."""
    return _created(
        api, api.request("POST", "customers", json=_scratch_body(f"{SCRATCH_PREFIX}{run}-{purpose}"), headers={})
    )


def _created(api: _Api, response: httpx.Response) -> dict[str, Any]:
    body = api.json(response)
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        if body["id"] not in api.created:
            api.created.append(body["id"])
        return body
    raise _Failed(
        f"a valid create answered {response.status_code} without a record",
        "Answer 201 with the created record.",
    )


def check_idempotent_create(api: _Api, run: str) -> str:
    name = f"{SCRATCH_PREFIX}{run}-idem"
    key = f"{SCRATCH_PREFIX}{run}-key"
    first = api.request("POST", "customers", json=_scratch_body(name), headers={"Idempotency-Key": key})
    record = _created(api, first)
    if first.status_code != 201:
        raise _Failed(f"a create answered {first.status_code}, not 201", "Answer 201 Created with Location and ETag.")
    again = api.request("POST", "customers", json=_scratch_body(name), headers={"Idempotency-Key": key})
    replay = _created(api, again)
    if replay["id"] != record["id"] or again.status_code != 200:
        raise _Failed(
            f"replaying an Idempotency-Key answered {again.status_code} with "
            + ("a second record" if replay["id"] != record["id"] else "the record"),
            "Remember Idempotency-Key per resource: the same key and body return the first record with 200.",
        )
    if again.headers.get("idempotent-replayed", "").lower() != "true":
        raise _Failed("a replay lacks `Idempotent-Replayed: true`", "Mark replays with Idempotent-Replayed: true.")
    changed = {**_scratch_body(name), "notes": "a different body"}
    reused = api.request("POST", "customers", json=changed, headers={"Idempotency-Key": key})
    with suppress(_Failed):
        if reused.status_code < 300:
            _created(api, reused)
    problem = _problem(reused, api)
    if reused.status_code != 422 or not problem or problem.get("code") != "idempotency_key_reused":
        raise _Failed(
            f"reusing an Idempotency-Key with another body answered {reused.status_code}",
            "Refuse a key reused with a different body: 422 with code idempotency_key_reused.",
        )
    return "Idempotency-Key: a replay returns the first record (200, Idempotent-Replayed); reuse is 422"


def check_conditional_patch(api: _Api, run: str) -> str:
    record = _scratch(api, run, "patch")
    path = f"customers/{record['id']}"
    missing = api.request("PATCH", path, json={"phone": "+47 22 00 00 00"})
    if missing.status_code != 428:
        raise _Failed(
            f"PATCH without If-Match answered {missing.status_code}, not 428",
            'Require If-Match: "<version>" on PATCH (428 Precondition Required without it).',
        )
    stale = api.request("PATCH", path, json={"phone": "+47 22 00 00 00"}, headers={"If-Match": '"999999"'})
    problem = _problem(stale, api)
    if stale.status_code != 412 or not problem or problem.get("current_version") != record["version"]:
        raise _Failed(
            f"PATCH with a stale If-Match answered {stale.status_code}",
            "Answer 412 with current_version when If-Match is not the record's version.",
        )
    return "If-Match: missing is 428, stale is 412 with current_version"


def check_merge_patch(api: _Api, run: str) -> str:
    record = _scratch(api, run, "merge")
    path = f"customers/{record['id']}"
    version = record["version"]
    patch = {"phone": "+47 22 00 00 00", "billing_address": {"city": "Bergen"}}
    response = api.request("PATCH", path, json=patch, headers={"If-Match": f'"{version}"'})
    patched = api.json(response)
    if response.status_code != 200 or not isinstance(patched, dict):
        raise _Failed(f"a merge patch answered {response.status_code}", "Accept RFC 7396 merge patches on PATCH.")
    address = patched.get("billing_address") or {}
    if (
        patched.get("phone") != patch["phone"]
        or address.get("city") != "Bergen"
        or address.get("line1") != "1 Conformance Way"
        or patched.get("notes") != record.get("notes")
    ):
        raise _Failed(
            "a merge patch did not keep the fields and address keys it left out",
            "Apply PATCH as RFC 7396: present fields set, null clears, absent fields and address keys stay.",
        )
    if patched.get("version") != version + 1 or response.headers.get("etag", "").strip() != f'"{version + 1}"':
        raise _Failed(
            f"a change took version {version} to {patched.get('version')} (ETag {response.headers.get('etag')})",
            "Increase version by exactly 1 on every change and send it as the ETag.",
        )
    cleared = api.request("PATCH", path, json={"phone": None}, headers={"If-Match": f'"{version + 1}"'})
    body = api.json(cleared)
    if cleared.status_code != 200 or not isinstance(body, dict) or body.get("phone") is not None:
        raise _Failed("a null in a merge patch did not clear the field", "Make null clear an optional field.")
    return "merge patch: present fields set, null clears, absent kept; version +1 per change with its ETag"


def check_echo_quiet(api: _Api, run: str) -> str:
    record = _scratch(api, run, "echo")
    same = {k: record[k] for k in ("company_name", "email", "notes")}
    response = api.request(
        "PATCH", f"customers/{record['id']}", json=same, headers={"If-Match": f'"{record["version"]}"'}
    )
    body = api.json(response)
    if response.status_code != 200 or not isinstance(body, dict):
        raise _Failed(f"a no-op patch answered {response.status_code}", "Accept a patch that changes nothing.")
    if body.get("version") != record["version"] or body.get("updated_at") != record["updated_at"]:
        raise _Failed(
            "a patch that changed nothing moved version or updated_at: our own writes would echo back",
            "Leave version and updated_at (and the feed) alone when a write changes nothing.",
        )
    return "a write that changes nothing keeps version and updated_at (no echo)"


def check_invalid_body(api: _Api, run: str) -> str:
    response = api.request("POST", "customers", json={"company_name": "  ", "email": f"{SCRATCH_PREFIX}{run}"})
    with suppress(_Failed):
        if response.status_code < 300:
            _created(api, response)
    problem = _problem(response, api)
    errors = problem.get("errors") if problem else None
    shaped = isinstance(errors, list) and all(
        isinstance(e, dict) and {"path", "message", "code"} <= set(e) for e in errors
    )
    paths = {tuple(e["path"]) for e in errors} if shaped and isinstance(errors, list) else set()
    if response.status_code != 422 or not shaped or ("company_name",) not in paths:
        raise _Failed(
            f"an invalid create answered {response.status_code}"
            + ("" if shaped else " without errors [{path, message, code}]"),
            'Answer 422 application/problem+json with errors like {"path": ["company_name"], "code": "blank"}.',
        )
    return "an invalid body answers 422 with a problem naming each field"


def check_delete_tombstone(api: _Api, run: str) -> str:
    record = _scratch(api, run, "delete")
    path = f"customers/{record['id']}"
    deleted = api.request("DELETE", path, headers={"If-Match": f'"{record["version"]}"'})
    if deleted.status_code != 204:
        raise _Failed(f"DELETE answered {deleted.status_code}, not 204", "Answer 204 No Content to a delete.")
    api.created.remove(record["id"])
    if api.request("GET", path).status_code != 404:
        raise _Failed("a deleted record is still served", "Answer 404 for a deleted record.")
    feed = api.feed("customers", BIG_PAGE, since=record["updated_at"], most=10_000)
    stones = [i for i in feed if isinstance(i, dict) and i.get("id") == record["id"]]
    if not stones or not _tombstone_shape(stones[-1]):
        raise _Failed(
            "a deleted record left no tombstone in the change feed",
            'Keep {"id", "deleted": true, "version", "updated_at"} in the feed after a delete.',
        )
    if stones[-1]["version"] != record["version"] + 1:
        raise _Failed("a delete did not increase the version", "Count a delete as a change: version + 1.")
    return "a delete answers 204, then 404, and leaves a tombstone (version + 1) in the feed"


SCRATCH_SUFFIXES = ("idem", "patch", "merge", "echo", "delete")


def _owned(item: Any, prefix: str) -> bool:
    """A listed record is this run's scratch record by its own company_name, whatever the list was asked for."""
    name = item.get("company_name") if isinstance(item, dict) else None
    return isinstance(name, str) and name.casefold().startswith(prefix.casefold()) and isinstance(item.get("id"), str)


def _clean_up(api: _Api, run: str) -> Check:
    """Delete every scratch record of this run, twins of a non-conforming create included; say what is left.

    The twins are found by listing `company_name=<scratch name>`. An ERP that ignores that filter lists its real
    customers, so only items whose own company_name carries this run's prefix are deleted.
    """
    prefix = f"{SCRATCH_PREFIX}{run}-"
    foreign = 0  # listed items that are not this run's: the filter was ignored
    unlisted: list[str] = []
    for suffix in SCRATCH_SUFFIXES:
        try:
            found = api.json(api.request("GET", "customers", params={"company_name": f"{prefix}{suffix}"}))
        except httpx.HTTPError:
            unlisted.append(suffix)
            continue
        items = found.get("items") if isinstance(found, dict) else None
        for item in items if isinstance(items, list) else []:
            if not _owned(item, prefix):
                foreign += 1
            elif item["id"] not in api.created:
                api.created.append(item["id"])
    left: list[str] = []
    for record_id in api.created:
        try:
            response = api.request("DELETE", f"customers/{record_id}")
        except httpx.HTTPError as exc:
            left.append(f"{record_id} (no answer: {type(exc).__name__})")
            continue
        if response.status_code >= 300 and response.status_code != 404:  # 404: already gone
            left.append(f"{record_id} (HTTP {response.status_code})")
    findings = []
    if left:
        findings.append(f"{len(left)} scratch customer(s) could not be deleted: {', '.join(left)}")
    if foreign:
        findings.append(
            f"listing customers by a scratch company_name returned {foreign} record(s) of other names over "
            f"{len(SCRATCH_SUFFIXES)} look-ups: the filter was ignored (the kit deleted none of them)"
        )
    if findings:
        fix = f"Delete the customers named {prefix}… by hand." if left else ""
        if foreign:
            fix += " Apply each list filter of GET /api/v1/customers as an exact match."
        return fail(AREA, "write_cleanup", "; ".join(findings), fix.strip())
    if unlisted:
        return warn(
            AREA,
            "write_cleanup",
            f"{len(api.created)} scratch record(s) deleted; the look-up for twins got no answer for "
            + ", ".join(f"{prefix}{s}" for s in unlisted),
            f"Look for customers named {prefix}… and delete them by hand.",
        )
    return ok(AREA, "write_cleanup", f"{len(api.created)} scratch record(s) deleted")


# ----- the run ---------------------------------------------------------------------------------------------------


def _run(name: str, body: Callable[[], str | None], checks: list[Check], *, absent: str = "") -> None:
    try:
        detail = body()
    except _Failed as exc:
        checks.append(fail(AREA, name, exc.detail, exc.fix))
    except httpx.HTTPError as exc:
        checks.append(
            fail(AREA, name, f"no answer ({type(exc).__name__})", "Check WAVESYNC_CUSTOMERP_URL and the ERP is up.")
        )
    except Exception as exc:  # noqa: BLE001 - a missing key or a list for an object: this check fails, the run goes on
        checks.append(
            fail(
                AREA,
                name,
                f"the answer did not have the contract's shape: {type(exc).__name__} {str(exc)[:120]} (check {name})",
                f"Answer with the JSON object and fields {CONTRACT} gives for this call (id, version, updated_at, …).",
            )
        )
    else:
        if detail is None:
            checks.append(warn(AREA, name, absent))
        elif "not exercised" in detail:
            checks.append(warn(AREA, name, detail, "Run it again on an ERP with data (or with --write-checks)."))
        else:
            checks.append(ok(AREA, name, detail))


def run_conformance(
    settings: Settings, *, write_checks: bool = False, transport: httpx.BaseTransport | None = None
) -> list[Check]:
    """Every contract check against WAVESYNC_CUSTOMERP_URL; writes only with `write_checks` (and cleans up)."""
    checks: list[Check] = []
    base = str(settings.customerp_url).rstrip("/")
    with httpx.Client(
        base_url=base, timeout=settings.http_timeout, transport=transport, verify=settings.verify_tls
    ) as http:
        api = _Api(http, settings.customerp_api_key.get_secret_value())
        for resource in ENTITIES:
            _run(f"feed_exact_{resource}", partial(check_feed_exact, api, resource), checks)
            _run(f"updated_since_{resource}", partial(check_updated_since_inclusive, api, resource), checks)
            _run(f"etag_{resource}", partial(check_etag, api, resource), checks)
            _run(f"not_found_{resource}", partial(check_not_found, api, resource), checks)
            absent = f"{resource}: no tombstones in the feed to check" + (
                " (the write checks delete a scratch customer)" if write_checks else " (--write-checks makes one)"
            )
            _run(f"tombstones_{resource}", partial(check_tombstones_in_feed, api, resource), checks, absent=absent)
        _run("bad_query", lambda: check_bad_query(api, "customers"), checks)
        _run("list_filter", lambda: check_list_filter(api), checks)
        if write_checks:
            run = uuid.uuid4().hex[:8]
            try:
                for name, check in WRITE_CHECKS.items():
                    _run(name, partial(check, api, run), checks)
            finally:
                checks.append(_clean_up(api, run))
    return checks


WRITE_CHECKS: dict[str, Callable[[_Api, str], str]] = {
    "write_idempotency": check_idempotent_create,
    "write_if_match": check_conditional_patch,
    "write_merge_patch": check_merge_patch,
    "write_echo_quiet": check_echo_quiet,
    "write_invalid_body": check_invalid_body,
    "write_delete_tombstone": check_delete_tombstone,
}


def check_names(*, write_checks: bool) -> Iterator[str]:
    """The names of the checks a run makes, for documentation and tests."""
    for resource in ENTITIES:
        for prefix in ("feed_exact", "updated_since", "etag", "not_found", "tombstones"):
            yield f"{AREA}.{prefix}_{resource}"
    yield f"{AREA}.bad_query"
    yield f"{AREA}.list_filter"
    if write_checks:
        yield from (f"{AREA}.{name}" for name in WRITE_CHECKS)
        yield f"{AREA}.write_cleanup"
