"""The emulator's state on disk: one JSON document per collection, written atomically.

One emulator process owns a state directory (see lifecycle); inside it, a lock serialises writers. Writes go
to a temporary file that is fsynced and renamed over the old one, so a SIGKILL leaves either the old or the
new document, never a torn one.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deployctl.osutil import atomic_write_text


class Store:
    """Collections of JSON objects keyed by resource name, e.g. store.get("secrets", name)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._cache: dict[str, dict[str, dict]] = {}

    def _path(self, collection: str) -> Path:
        return self.root / f"{collection}.json"

    def _load(self, collection: str) -> dict[str, dict]:
        if collection not in self._cache:
            path = self._path(collection)
            self._cache[collection] = json.loads(path.read_text("utf-8")) if path.exists() else {}
        return self._cache[collection]

    def _save(self, collection: str) -> None:
        atomic_write_text(self._path(collection), json.dumps(self._cache[collection], indent=1, sort_keys=True))

    def get(self, collection: str, key: str) -> dict | None:
        with self._lock:
            value = self._load(collection).get(key)
            return copy.deepcopy(value)

    def list(self, collection: str, prefix: str = "") -> list[dict]:
        with self._lock:
            items = self._load(collection)
            return [copy.deepcopy(v) for k, v in sorted(items.items()) if k.startswith(prefix)]

    def keys(self, collection: str, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._load(collection) if k.startswith(prefix))

    def put(self, collection: str, key: str, value: dict) -> None:
        with self._lock:
            self._load(collection)[key] = copy.deepcopy(value)
            self._save(collection)

    def delete(self, collection: str, key: str) -> dict | None:
        with self._lock:
            value = self._load(collection).pop(key, None)
            self._save(collection)
            return value

    @contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the store's lock across a read-modify-write (e.g. an etag check then an update)."""
        with self._lock:
            yield self
