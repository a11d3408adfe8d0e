"""List+watch of one kind of object: what the operator's indexes and the gateway's realm index are fed by.

One loop per watched namespace (or one cluster-wide), each the API server's own protocol: a listing in pages of
`PAGE_SIZE` (a fleet of 10,000 never arrives as one response), then a watch from the listing's resourceVersion
with bookmarks, ended by the server every `WATCH_TIMEOUT_SECONDS` and resumed; after 410 Gone a fresh listing,
where an object no longer listed arrives as DELETED (with only its namespace and name). Other failures back off
and retry. Objects stay raw JSON dicts: no typed models, and nothing kept here, so a consumer (`sink`) keeps only
the fields it needs and the parsed body is garbage as soon as the sink returns.

The sink sees `(None, obj)` for a listed object, `("ADDED" | "MODIFIED" | "DELETED", obj)` for a watch event,
in the order the API server sent them; `synced` is set once every scope has been listed."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

Resource = tuple[str, str, str]  # (group, version, plural); group "" is the core API
Sink = Callable[[str | None, dict[str, Any]], None]

PAGE_SIZE = 500  # objects per listing request
WATCH_TIMEOUT_SECONDS = 300
_BACKOFF_MAX = 5.0  # an API server back after a restart is followed within seconds (kopf: 0.1 s)


def collection_path(resource: Resource, namespace: str | None) -> str:
    group, version, plural = resource
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


async def _lines(response: Any) -> AsyncIterator[bytes]:
    """The watch's JSON lines, however long (aiohttp's `readline` refuses lines over 128 KiB)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line


class Informer:
    """Feeds `sink` from the API server until cancelled (`run`)."""

    def __init__(
        self,
        api: ApiClient,
        resource: Resource,
        sink: Sink,
        namespaces: Sequence[str] = (),
        label_selector: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.api = api
        self.page_size = page_size
        self.resource = resource
        self.sink = sink
        self.label_selector = label_selector
        self.scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self.synced = asyncio.Event()
        self._listed: set[str | None] = set()
        self._keys: dict[str | None, set[tuple[str, str]]] = {scope: set() for scope in self.scopes}

    @property
    def what(self) -> str:
        return self.resource[2]

    async def run(self) -> None:
        await asyncio.gather(*(self._run_scope(scope) for scope in self.scopes))

    async def _request(self, scope: str | None, params: dict[str, Any], request_timeout: Any) -> Any:
        query = [(k, v) for k, v in params.items() if v is not None]
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        response = await self.api.call_api(
            collection_path(self.resource, scope),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=request_timeout,
        )
        if not 200 <= response.status <= 299:
            body = await response.read()
            response.release()
            raise ApiException(status=response.status, reason=response.reason or body[:200].decode(errors="replace"))
        return response

    async def _list(self, scope: str | None) -> str:
        """One full listing, page by page; returns the resourceVersion to watch from."""
        seen: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            response = await self._request(scope, {"limit": self.page_size, "continue": token}, 60)
            try:
                page = json.loads(await response.read())
            finally:
                response.release()
            kind = str(page.get("kind") or "").removesuffix("List")
            for obj in page.get("items") or []:
                obj.setdefault("apiVersion", page.get("apiVersion"))  # a listing's items carry neither, a watch's do
                obj.setdefault("kind", kind)
                seen.add(object_key(obj))
                self.sink(None, obj)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                break
        for namespace, name in self._keys[scope] - seen:  # gone while we were not watching
            self.sink("DELETED", {"metadata": {"namespace": namespace, "name": name}})
        self._keys[scope] = seen
        self._listed.add(scope)
        if all(s in self._listed for s in self.scopes):
            self.synced.set()
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, scope: str | None, resource_version: str) -> str:
        """Follow the watch until the server ends it; returns the last resourceVersion seen."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_TIMEOUT_SECONDS,
        }
        response = await self._request(scope, params, (10, WATCH_TIMEOUT_SECONDS + 30))
        keys = self._keys[scope]
        try:
            async for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("reason") or "watch error")
                resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    keys.discard(object_key(obj))
                else:
                    keys.add(object_key(obj))
                self.sink(kind, obj)
        finally:
            response.release()
        return resource_version

    async def _run_scope(self, scope: str | None) -> None:
        where = f"{self.what} in {scope or 'all namespaces'}"
        resource_version: str | None = None
        failures = 0
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list(scope)
                    log.info("listed %s: %d objects", where, len(self._keys[scope]))
                resource_version = await self._watch(scope, resource_version)
                failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    log.info("watch of %s expired; listing again", where)
                    resource_version = None
                    continue
                failures += 1
                log.warning("watch of %s failed (HTTP %s %s); retrying", where, exc.status, exc.reason)
            except Exception as exc:  # network errors, API server restarts
                failures += 1
                log.warning("watch of %s interrupted (%s); retrying", where, type(exc).__name__)
            if failures:
                await asyncio.sleep(min(_BACKOFF_MAX, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0))  # noqa: S311
