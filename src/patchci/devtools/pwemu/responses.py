"""Response values and the early-exit exception the routes raise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Resp:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Abort(Exception):
    def __init__(self, resp: Resp) -> None:
        super().__init__(resp.status)
        self.resp = resp


def _json(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Resp:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Resp(status, body, "application/json", headers or [])


def _html(status: int, title: str) -> Resp:
    body = f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Resp(status, body.encode(), "text/html; charset=utf-8")


def _detail(status: int, msg: str) -> _Abort:
    return _Abort(_json(status, {"detail": msg}))
