"""The Wave sandbox's OAuth2 server: authorize, code and refresh grants, rotation, revocation, PKCE, counters, and the
root queries `user` and `businesses`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from sandboxes.serve import ServerThread
from sandboxes.wave import DEFAULT_BUSINESS_ID, GRAPHQL_PATH, ManualClock, WaveSandboxConfig, create_app
from sandboxes.wave.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, OAuthSandboxConfig, s256

REDIRECT = "http://127.0.0.1:9/callback"
WHO = "{ user { id defaultEmail firstName lastName createdAt } businesses { edges { node { id name } } pageInfo { totalPages totalCount } } }"  # noqa: E501


@dataclass
class OAuthBox:
    server: ServerThread
    http: httpx.Client
    clock: ManualClock

    def authorize(self, **params: str) -> httpx.Response:
        query = {
            "client_id": DEFAULT_CLIENT_ID,
            "response_type": "code",
            "scope": "business:read user:read",
            "redirect_uri": REDIRECT,
            "state": "s1",
            **params,
        }
        return self.http.get("/oauth2/authorize/", params=query)

    def code(self, **params: str) -> str:
        response = self.authorize(**params)
        assert response.status_code == 302, response.text
        found = parse_qs(urlparse(response.headers["location"]).query)
        assert found["state"] == [params.get("state", "s1")]
        return found["code"][0]

    def token(self, **form: str) -> httpx.Response:
        return self.http.post(
            "/oauth2/token/", data={"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, **form}
        )

    def exchange(self, code: str, **form: str) -> dict[str, Any]:
        response = self.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, **form)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def gql(self, token: str, query: str = WHO) -> httpx.Response:
        return self.http.post(GRAPHQL_PATH, json={"query": query}, headers={"Authorization": f"Bearer {token}"})

    def admin(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/_admin/oauth").json()
        return body


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServerThread, ManualClock]]:
    clock = ManualClock(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))
    config = WaveSandboxConfig(clock=clock, oauth=OAuthSandboxConfig(access_token_lifetime_s=120))
    with ServerThread(create_app(config)) as server:
        yield server, clock


@pytest.fixture
def box(served: tuple[ServerThread, ManualClock]) -> Iterator[OAuthBox]:
    server, clock = served
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.post("/_admin/reset").raise_for_status()
        yield OAuthBox(server, http, clock)


def test_the_code_grant_gives_a_pair_whose_access_token_the_api_accepts(box: OAuthBox) -> None:
    pair = box.exchange(box.code())
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 120
    assert pair["scope"] == "business:read user:read"
    body = box.gql(pair["access_token"]).json()
    assert body["data"]["user"]["defaultEmail"] == "owner@sandbox.example"
    assert body["data"]["businesses"]["edges"][0]["node"]["id"] == DEFAULT_BUSINESS_ID
    assert body["data"]["businesses"]["pageInfo"] == {"totalPages": 1, "totalCount": 1}
    assert box.admin()["token_calls"] == {"authorization_code": 1, "total": 1}


def test_a_code_works_once(box: OAuthBox) -> None:
    code = box.code()
    box.exchange(code)
    again = box.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_an_expired_access_token_is_refused_as_configured(box: OAuthBox) -> None:
    pair = box.exchange(box.code())
    box.clock.advance(121)
    refused = box.gql(pair["access_token"])
    assert refused.status_code == 200  # the sandbox's default auth_failure_status
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_an_expired_access_token_gets_401_when_configured() -> None:
    config = WaveSandboxConfig(auth_failure_status=401, oauth=OAuthSandboxConfig(access_token_lifetime_s=120))
    with ServerThread(create_app(config)) as server, httpx.Client(base_url=server.url) as http:
        box = OAuthBox(server, http, ManualClock())
        pair = box.exchange(box.code())
        assert box.gql(pair["access_token"]).status_code == 200
        http.post("/_admin/oauth/expire").raise_for_status()
        assert box.gql(pair["access_token"]).status_code == 401


def test_refresh_rotates_and_a_spent_refresh_token_is_invalid_grant(box: OAuthBox) -> None:
    pair = box.exchange(box.code())
    second = box.token(grant_type="refresh_token", refresh_token=pair["refresh_token"]).json()
    assert second["refresh_token"] != pair["refresh_token"]
    assert box.gql(second["access_token"]).json()["data"]["user"]
    reused = box.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    third = box.token(grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert third.status_code == 200
    assert box.admin()["token_calls"]["refresh_token"] == 3


def test_revocation_refuses_the_access_and_the_refresh_token(box: OAuthBox) -> None:
    pair = box.exchange(box.code())
    assert box.http.post("/_admin/oauth/revoke").json() == {"revoked": 1}
    assert box.gql(pair["access_token"]).json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    refreshed = box.token(grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert refreshed.json()["error"] == "invalid_grant"


def test_pkce_s256_is_checked_when_a_challenge_was_sent(box: OAuthBox) -> None:
    verifier = "v" * 50
    code = box.code(code_challenge=s256(verifier), code_challenge_method="S256")
    wrong = box.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, code_verifier="x" * 50)
    assert wrong.json()["error"] == "invalid_grant"
    code = box.code(code_challenge=s256(verifier), code_challenge_method="S256")
    assert box.exchange(code, code_verifier=verifier)["access_token"]


def test_pkce_can_be_required(box: OAuthBox) -> None:
    box.http.patch("/_admin/oauth", json={"pkce": "required"}).raise_for_status()
    refused = box.authorize()
    assert parse_qs(urlparse(refused.headers["location"]).query)["error"] == ["invalid_request"]


@pytest.mark.parametrize(
    ("params", "error"),
    [({"scope": "customers:read"}, "invalid_scope"), ({"response_type": "token"}, "unsupported_response_type")],
)
def test_a_bad_authorize_request_redirects_with_the_error_and_state(
    params: dict[str, str], error: str, box: OAuthBox
) -> None:
    response = box.authorize(**params)
    found = parse_qs(urlparse(response.headers["location"]).query)
    assert (found["error"], found["state"]) == ([error], ["s1"])


def test_client_authentication_is_checked(box: OAuthBox) -> None:
    code = box.code()
    response = box.http.post(
        "/oauth2/token/",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": "wrong",
        },
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert box.authorize(client_id="nobody").status_code == 400


def test_the_admin_code_and_the_endpoint_faults(box: OAuthBox) -> None:
    code = box.http.post("/_admin/oauth/code", json={"redirect_uri": REDIRECT, "scope": "user:read"}).json()["code"]
    box.http.patch("/_admin/oauth", json={"endpoint_fault": "error_500", "endpoint_fault_count": 1}).raise_for_status()
    assert box.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT).status_code == 500
    assert box.exchange(code)["scope"] == "user:read"  # the fault did not use the code up
    assert box.http.patch("/_admin/oauth", json={"nonsense": 1}).status_code == 422


def test_static_tokens_still_work_beside_oauth(box: OAuthBox) -> None:
    assert box.gql("wave-sandbox-token").json()["data"]["user"]["firstName"] == "Sandy"
    assert box.gql("not-a-token").json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
