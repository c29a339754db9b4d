"""Patchwork REST client (API 1.3, falling back to older versions).

Written against the behaviour of a real Patchwork v3.2.1 server (see the shared reference
patchwork-api.md). The quirks that shape this module:

- Event and check dates are naive *server-local* time (TIME_ZONE, e.g. UTC+11), while
  series and patch dates are the mail's Date: header in UTC. The polling cursor is therefore
  always a date the server gave us; this client never reads its own clock.
- A time-zone suffix in `since` (`Z`, `+00:00`) makes the server answer HTTP 500, so such a
  cursor is refused before anything is sent.
- `since` is inclusive, so the newest event seen is returned again: callers drop
  duplicates by event id (event ids only go up).
- Lists are bare JSON arrays paginated by `Link` headers; we follow rel="next".
- A bad token is a 403, not a 401, and only project maintainers may post checks.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from patchci.errors import FetchError
from patchci.model import Person

log = logging.getLogger(__name__)

API_VERSIONS = ("1.3", "1.2", "1.1", "1.0")
CHECK_STATES = frozenset({"pending", "success", "warning", "fail"})
_SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,255}\Z")
# Formats Patchwork accepts for since/before; a zone suffix is deliberately not allowed.
_NAIVE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?\Z")
# Status codes a reverse proxy gives when the request did not reach (or finish in) the app.
_MAX_SLEEP = 60.0


class PatchworkAuthError(FetchError):
    """403 from Patchwork: bad token, or an account that may not do this."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class PatchworkRequestError(FetchError):
    """400 from Patchwork: the request was invalid; `errors` holds the per-field messages."""

    def __init__(self, message: str, errors: Mapping[str, list[str]]) -> None:
        super().__init__(message)
        self.errors = dict(errors)


class PatchworkNotFound(FetchError):
    """404 from Patchwork: no such object (or no such API version)."""


@dataclass(frozen=True)
class PwEvent:
    """A series-completed event. `date` is the server's naive local string, unchanged."""

    id: int
    date: str
    series_id: int
    series_name: str


@dataclass(frozen=True)
class PwPatchRef:
    """A patch or cover letter as listed inside a series."""

    id: int
    msgid: str
    name: str
    mbox: str
    web_url: str | None = None
    list_archive_url: str | None = None


@dataclass(frozen=True)
class PwSeries:
    id: int
    name: str
    version: int
    total: int
    received_total: int
    received_all: bool
    date: str
    submitter: Person
    web_url: str | None
    mbox: str
    cover: PwPatchRef | None
    patches: tuple[PwPatchRef, ...]


@dataclass(frozen=True)
class PwCheck:
    id: int
    state: str
    context: str
    date: str
    description: str | None
    target_url: str | None
    user: str | None = None


class _Retry(Exception):
    """Internal: this attempt failed in a way that may succeed when repeated."""


class PatchworkClient:
    """A small synchronous client; one instance per (server, project).

    `sleep` is injectable so tests run the backoff without waiting.
    """

    def __init__(
        self,
        url: str,
        project: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        api_version: str = "1.3",
        user_agent: str = "patchci/0.1",
        transport: httpx.BaseTransport | None = None,
        per_page: int = 100,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = re.sub(r"/api/?$", "", url.rstrip("/"))
        self.project = project
        self.api_version = api_version
        self.retries = max(0, retries)
        self.backoff = backoff
        self.per_page = max(1, min(per_page, 250))
        self.timeout = timeout
        self._sleep = sleep
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self.has_token = bool(token)
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(
            headers=headers, timeout=timeout, transport=transport, follow_redirects=True
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PatchworkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the token
        return f"PatchworkClient({self.base!r}, project={self.project!r})"

    @property
    def url(self) -> str:
        """The server's base URL (no /api/ suffix)."""
        return self.base

    def api(self, path: str) -> str:
        return f"{self.base}/api/{self.api_version}/{path.lstrip('/')}"

    # ------------------------------------------------------------ public API

    def probe(self) -> str:
        """Find the newest supported API version (the root has no version in it)."""
        start = API_VERSIONS.index(self.api_version) if self.api_version in API_VERSIONS else 0
        for version in API_VERSIONS[start:]:
            try:
                self._request("GET", f"{self.base}/api/{version}/")
            except PatchworkNotFound:
                log.debug("patchwork %s: no API %s", self.base, version)
                continue
            self.api_version = version
            log.info("patchwork %s: using API %s", self.base, version)
            return version
        raise FetchError(f"{self.base} does not answer any Patchwork API version {API_VERSIONS}")

    def iter_series_completed(
        self, since: str | None, *, skip_ids: Collection[int] = (), lookback: float = 0.0
    ) -> Iterator[PwEvent]:
        """series-completed events; see iter_events."""
        return self.iter_events("series-completed", since, skip_ids=skip_ids, lookback=lookback)

    def iter_events(
        self,
        category: str,
        since: str | None,
        *,
        skip_ids: Collection[int] = (),
        lookback: float = 0.0,
    ) -> Iterator[PwEvent]:
        """Series events (*category* series-created or series-completed) oldest first,
        from *since* (inclusive) on.

        *since* must be a date the server gave us (an earlier event's `date`), never the
        client's clock. Events whose id is in *skip_ids* (already handled) are dropped.
        *lookback* (seconds) moves the cursor back by that much of the server's own time:
        with a DST zone such as Australia/Canberra the naive server clock repeats an hour
        each year, and events from that hour would sort before the cursor. Use it with
        dedupe by event id (e.g. lookback=3600).
        """
        params: dict[str, str | int] = {
            "project": self.project,
            "category": category,
            "order": "date",
            "per_page": self.per_page,
        }
        if since is not None:
            params["since"] = _shift(naive_since(since), lookback)
        seen = set(skip_ids)
        for item in self._paginate(self.api("events/"), params):
            event = _parse_event(item)
            if event is None or event.id in seen:
                continue
            seen.add(event.id)
            yield event

    def get_series(self, series_id: int) -> PwSeries:
        data = self._json("GET", self.api(f"series/{series_id}/"))
        try:
            return _parse_series(data)
        except (KeyError, TypeError, ValueError) as e:
            raise FetchError(f"series {series_id}: unexpected Patchwork response ({e!r})") from e

    def fetch_mbox(self, url: str) -> bytes:
        return self._request("GET", url).content

    def series_mbox(self, series: PwSeries) -> bytes:
        """The patches of *series*, in order (Patchwork leaves the cover letter out)."""
        return self.fetch_mbox(series.mbox)

    def patch_mbox(self, ref: PwPatchRef) -> bytes:
        return self.fetch_mbox(ref.mbox)

    def post_check(
        self,
        patch_id: int,
        state: str,
        context: str,
        description: str | None = None,
        target_url: str | None = None,
    ) -> int:
        """Post a check on a patch; returns the new check's id."""
        if state not in CHECK_STATES:
            raise ValueError(f"invalid Patchwork check state {state!r}")
        if not _SLUG_RE.match(context):
            raise ValueError(f"check context must be a slug [-a-zA-Z0-9_]: {context!r}")
        body: dict[str, str] = {"state": state, "context": context}
        if description is not None:
            body["description"] = description
        if target_url is not None:
            body["target_url"] = target_url
        data = self._json("POST", self.api(f"patches/{patch_id}/checks/"), body=body)
        log.info("patch %d: posted check %s=%s", patch_id, context, state)
        return _as_int(data, "id")

    def patch_state(self, patch_id: int) -> str:
        """The patch's state slug (`new`, `accepted`, `superseded`…)."""
        data = self._json("GET", self.api(f"patches/{patch_id}/"))
        state = data.get("state") if isinstance(data, dict) else None
        if not isinstance(state, str) or not state:
            raise FetchError(f"patch {patch_id}: no state in Patchwork's answer: {data!r:.200}")
        return state

    def set_patch_state(self, patch_id: int, state: str) -> None:
        """PATCH the patch's state (a maintainer's token); FetchError when refused."""
        self._json("PATCH", self.api(f"patches/{patch_id}/"), body={"state": state})

    def list_checks(self, patch_id: int, context: str | None = None) -> list[PwCheck]:
        """Every check of a patch, oldest first (all pages)."""
        params: dict[str, str | int] = {"per_page": self.per_page}
        if context is not None:
            params["context"] = context
        url = self.api(f"patches/{patch_id}/checks/")
        return [_parse_check(c) for c in self._paginate(url, params)]

    def latest_checks(self, patch_id: int) -> dict[str, PwCheck]:
        """The newest check per context: what Patchwork itself shows for the patch."""
        latest: dict[str, PwCheck] = {}
        for check in self.list_checks(patch_id):
            latest[check.context] = check
        return latest

    # ------------------------------------------------------------ transport

    def _paginate(self, url: str, params: dict[str, str | int]) -> Iterator[Any]:
        next_url: str | None = url
        query: dict[str, str | int] | None = params
        while next_url:
            resp = self._request("GET", next_url, params=query)
            items = _decode(resp)
            if not isinstance(items, list):
                raise FetchError(f"GET {_public(next_url)}: expected a JSON list")
            yield from items
            # The next link is absolute and already carries our query.
            next_url = resp.links.get("next", {}).get("url")
            query = None

    def _json(self, method: str, url: str, body: Mapping[str, str] | None = None) -> Any:
        return _decode(self._request(method, url, body=body))

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One logical request with retries; raises FetchError (or a subclass)."""
        what = f"{method} {_public(url)}"
        last = ""
        retry_after = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt, what, last, retry_after)
            try:
                resp = self._http.request(method, url, params=params, json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                if _may_retry_exc(method, e):
                    continue
                raise FetchError(
                    f"{what} failed: {last} (not retried: may have reached the server)"
                ) from e
            try:
                return self._check_status(method, what, resp)
            except _Retry as e:
                last = str(e)
                retry_after = _retry_after(resp)
        raise FetchError(f"{what} failed after {self.retries + 1} attempts: {last}")

    def _pause(self, attempt: int, what: str, last: str, retry_after: float) -> None:
        # Exponential backoff with jitter, so several bots do not retry in lockstep.
        delay = self.backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        delay = min(max(delay, retry_after), _MAX_SLEEP)
        log.warning("%s: %s; retry %d/%d in %.1fs", what, last, attempt, self.retries, delay)
        self._sleep(delay)

    def _check_status(self, method: str, what: str, resp: httpx.Response) -> httpx.Response:
        code = resp.status_code
        if code < 400:
            return resp
        detail = _detail(resp)
        if code >= 500:
            msg = f"HTTP {code}" + (f": {detail}" if detail else "")
            # Any 5xx on a POST may come after the check was stored (a 504 from the proxy
            # while the app finished): repeating it could post a duplicate. The delivery
            # ledger retries on the next cycle after asking the server what landed.
            if method == "GET":
                raise _Retry(msg)
            raise FetchError(f"{what} failed: {msg} (not retried: the server may have acted)")
        if code == 403:
            if not self.has_token:  # nothing was sent: the account is not to blame
                hint = "no token was sent: set the source's token_env variable"
            elif "token" in detail.lower():
                hint = "check the Patchwork token"
            else:
                hint = f"the CI account must be a maintainer of project {self.project}"
            raise PatchworkAuthError(f"{what}: 403 {detail} ({hint})", detail)
        if code == 400:
            errors = _field_errors(resp)
            fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
            raise PatchworkRequestError(f"{what}: 400 {fields or detail}", errors)
        if code == 404:
            raise PatchworkNotFound(f"{what}: 404 {detail or 'not found'}")
        raise FetchError(f"{what}: HTTP {code} {detail}")


# ---------------------------------------------------------------- helpers


def naive_since(value: str) -> str:
    """Check that *value* is a naive timestamp Patchwork accepts; refuse a zone suffix.

    Stripping `Z` or `+00:00` would silently shift the cursor by the server's TIME_ZONE
    offset, so a zoned value is a caller bug, not something to repair here.
    """
    value = value.strip()
    if not _NAIVE_RE.match(value):
        raise ValueError(
            f"since={value!r}: Patchwork needs a naive server-local timestamp "
            "(a zone suffix gives HTTP 500); pass an event's own `date`"
        )
    return value


def _shift(since: str, seconds: float) -> str:
    """*since* minus *seconds*, still naive; plain arithmetic on the server's own date."""
    if not seconds:
        return since
    return (
        datetime.fromisoformat(since.replace(" ", "T")) - timedelta(seconds=seconds)
    ).isoformat()


def _may_retry_exc(method: str, exc: httpx.HTTPError) -> bool:
    if method == "GET":
        return isinstance(exc, httpx.TransportError)
    # A POST is only repeated when it certainly never reached the server.
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _retry_after(resp: httpx.Response) -> float:
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 0.0


def _public(url: str) -> str:
    return url.split("?", 1)[0]


def _decode(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError as e:
        raise FetchError(f"{resp.request.method} {_public(str(resp.url))}: not JSON") from e


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.reason_phrase
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return str(data["detail"])
    return ""


def _field_errors(resp: httpx.Response) -> dict[str, list[str]]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(k): [str(m) for m in v] if isinstance(v, list) else [str(v)] for k, v in data.items()
    }


def _as_int(data: Any, key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is not an integer: {value!r}")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _parse_event(item: Any) -> PwEvent | None:
    try:
        series = item["payload"]["series"]
        return PwEvent(
            id=_as_int(item, "id"),
            date=str(item["date"]),
            series_id=_as_int(series, "id"),
            series_name=str(series.get("name") or ""),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring malformed Patchwork event: %.200r", item)
        return None


def _parse_ref(data: Mapping[str, Any]) -> PwPatchRef:
    return PwPatchRef(
        id=_as_int(data, "id"),
        msgid=str(data["msgid"]),
        name=str(data["name"]),
        mbox=str(data["mbox"]),
        web_url=_opt_str(data, "web_url"),
        list_archive_url=_opt_str(data, "list_archive_url"),
    )


def _parse_series(data: Any) -> PwSeries:
    sub = data.get("submitter") or {}
    cover = data.get("cover_letter")
    return PwSeries(
        id=_as_int(data, "id"),
        name=str(data.get("name") or ""),
        version=_as_int(data, "version"),
        total=_as_int(data, "total"),
        received_total=_as_int(data, "received_total"),
        received_all=bool(data["received_all"]),
        date=str(data["date"]),
        submitter=Person(str(sub.get("name") or ""), str(sub.get("email") or "")),
        web_url=_opt_str(data, "web_url"),
        mbox=str(data["mbox"]),
        cover=_parse_ref(cover) if cover else None,
        patches=tuple(_parse_ref(p) for p in data.get("patches") or ()),
    )


def _parse_check(data: Any) -> PwCheck:
    try:
        user = data.get("user")
        return PwCheck(
            id=_as_int(data, "id"),
            state=str(data["state"]),
            context=str(data["context"]),
            date=str(data["date"]),
            description=_opt_str(data, "description"),
            target_url=_opt_str(data, "target_url"),
            user=_opt_str(user, "username") if isinstance(user, dict) else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FetchError(f"unexpected check in Patchwork response: {data!r:.200}") from e
