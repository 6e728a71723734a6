"""An index of Wave records by natural keys that Wave cannot filter on (customer displayId, product name).

The Wave pollers see every Wave record and keep this index current for free; the workers consult it before
creating a record in Wave, so records that exist on both sides before the first sync are matched, not
duplicated. Keys are compared case-insensitively and without surrounding spaces.
"""

from __future__ import annotations

import redis

from shared import keys


def normalise_key(value: str) -> str:
    return " ".join(value.split()).casefold()


class NaturalKeyIndex:
    def __init__(self, client: redis.Redis, entity: str, key_name: str) -> None:
        self.redis = client
        self.key = f"{keys.PREFIX}:index:wave:{entity}:{key_name}"

    def put(self, value: str | None, wave_id: str) -> None:
        if value and value.strip():
            self.redis.hset(self.key, normalise_key(value), wave_id)

    def get(self, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        found = self.redis.hget(self.key, normalise_key(value))
        return found.decode() if isinstance(found, bytes) else None

    def forget(self, value: str | None, wave_id: str) -> None:
        if value and self.get(value) == wave_id:
            self.redis.hdel(self.key, normalise_key(value))
