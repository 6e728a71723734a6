"""Idempotent creates and If-Match guarded updates and deletes on the Customerp sandbox."""

from __future__ import annotations

import httpx
import pytest

from sandboxes.serve import ServerThread
from shared.customerp.client import CustomerpClient
from shared.errors import AuthError, ConflictError, ForbiddenEditError, InvalidDataError
from tests.sandboxes.customerp.conftest import CUSTOMER, PRODUCT, READ_ONLY_KEY


def test_same_idempotency_key_and_body_twice_creates_one_record(client: CustomerpClient, admin: httpx.Client) -> None:
    first = client.create("customers", CUSTOMER, idempotency_key="wave:cust:1")
    second = client.create("customers", CUSTOMER, idempotency_key="wave:cust:1")

    assert second == first
    assert len(admin.get("/_admin/snapshot").json()["customers"]) == 1


def test_replay_answers_200_with_the_current_record(client: CustomerpClient, admin: httpx.Client) -> None:
    created = client.create("customers", CUSTOMER, idempotency_key="k")
    client.update("customers", created.id, {"phone": "123"}, version=1)

    replay = admin.post("/api/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "k"})

    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.json()["id"], replay.json()["version"]) == (created.id, 2)


def test_same_key_with_another_body_is_refused(client: CustomerpClient) -> None:
    client.create("customers", CUSTOMER, idempotency_key="k")

    with pytest.raises(InvalidDataError, match="idempotency_key_reused"):
        client.create("customers", {**CUSTOMER, "company_name": "Else"}, idempotency_key="k")


def test_keys_are_scoped_per_resource(client: CustomerpClient) -> None:
    client.create("customers", CUSTOMER, idempotency_key="k")

    product = client.create("products", PRODUCT, idempotency_key="k")

    assert product.name == PRODUCT["name"]


def test_replay_after_the_record_was_deleted_is_a_conflict(client: CustomerpClient) -> None:
    created = client.create("products", PRODUCT, idempotency_key="k")
    client.delete("products", created.id)

    with pytest.raises(ForbiddenEditError, match="idempotency_key_record_deleted"):
        client.create("products", PRODUCT, idempotency_key="k")


def test_a_refused_create_does_not_bind_its_key(client: CustomerpClient) -> None:
    with pytest.raises(InvalidDataError):
        client.create("products", {**PRODUCT, "unit_price": "-1"}, idempotency_key="k")

    assert client.create("products", PRODUCT, idempotency_key="k").unit_price == 12.5


def test_update_with_a_stale_version_is_a_conflict_naming_the_current_one(client: CustomerpClient) -> None:
    created = client.create("customers", CUSTOMER, idempotency_key="k")
    client.update("customers", created.id, {"phone": "1"}, version=1)

    with pytest.raises(ConflictError, match="current version 2"):
        client.update("customers", created.id, {"phone": "2"}, version=1)


def test_412_body_carries_current_version(client: CustomerpClient, admin: httpx.Client) -> None:
    created = client.create("customers", CUSTOMER, idempotency_key="k")

    response = admin.patch(f"/api/v1/customers/{created.id}", json={"phone": "2"}, headers={"If-Match": '"5"'})

    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["current_version"] == 1


def test_update_without_if_match_is_428(client: CustomerpClient, admin: httpx.Client) -> None:
    created = client.create("customers", CUSTOMER, idempotency_key="k")

    response = admin.patch(f"/api/v1/customers/{created.id}", json={"phone": "2"})

    assert response.status_code == 428
    assert response.json()["code"] == "precondition_required"


def test_weak_etag_is_accepted_and_garbage_is_400(client: CustomerpClient, admin: httpx.Client) -> None:
    created = client.create("customers", CUSTOMER, idempotency_key="k")
    path = f"/api/v1/customers/{created.id}"

    weak = admin.patch(path, json={"phone": "2"}, headers={"If-Match": 'W/"1"'})
    garbage = admin.patch(path, json={"phone": "3"}, headers={"If-Match": "version-2"})

    assert (weak.status_code, weak.headers["etag"]) == (200, '"2"')
    assert garbage.status_code == 400


def test_delete_with_a_stale_version_is_a_conflict(client: CustomerpClient) -> None:
    created = client.create("products", PRODUCT, idempotency_key="k")
    client.update("products", created.id, {"archived": True}, version=1)

    with pytest.raises(ConflictError):
        client.delete("products", created.id, version=1)
    client.delete("products", created.id, version=2)


def test_read_only_key_reads_but_cannot_write(sandbox: ServerThread, client: CustomerpClient) -> None:
    created = client.create("products", PRODUCT, idempotency_key="k")
    url = sandbox.url
    with CustomerpClient(url, READ_ONLY_KEY) as reader:
        assert reader.get("products", created.id) == created
        with pytest.raises(AuthError):
            reader.update("products", created.id, {"name": "x"}, version=1)


def test_missing_or_wrong_key_is_401_problem(sandbox: ServerThread) -> None:
    url = sandbox.url
    with CustomerpClient(url, "wrong-secret-key") as stranger, pytest.raises(AuthError) as caught:
        stranger.changes("customers")
    assert "wrong-secret-key" not in str(caught.value)
    response = httpx.get(url + "/api/v1/customers/changes")
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")


def test_malformed_json_body_is_400_permanent(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/customers", content=b"{not json", headers={"Content-Type": "application/json"})

    assert (response.status_code, response.json()["code"]) == (400, "malformed_json")


def test_wrong_method_is_405_with_allow(admin: httpx.Client) -> None:
    response = admin.put("/api/v1/customers/cus_1", json={})

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}
    assert response.headers["content-type"] == "application/problem+json"
