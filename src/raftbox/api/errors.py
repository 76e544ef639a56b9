"""The api layer's errors: one small typed hierarchy, and the one place each becomes an answer.

Every failure a route raises is an `ApiFailure`; the class says whose fault it is, whether
retrying helps, the HTTP status and the Dropbox shape of the answer (`response()`, the only
rendering `ApiServer.dispatch` uses):

| class               | whose fault | retry helps        | HTTP          | body                          |
| ------------------- | ----------- | ------------------ | ------------- | ----------------------------- |
| `BadInput`          | the caller  | no                 | 400           | text: `Error in call to ...`  |
| `AuthFailed`        | the caller  | no                 | 401           | JSON `AuthError` tag          |
| `ApiError`          | the caller  | no                 | 409 (or 416)  | JSON route error union        |
| `UploadWriteFailed` | the caller  | no                 | 409           | JSON `UploadError.path` struct|
| `RateLimited`       | the caller  | after `retry_after_s` | 429 + `Retry-After` | JSON `RateLimitError` |
| `Unavailable`       | the service | yes (SDKs do)      | 503           | text: `service unavailable: ` |

A route error (`ApiError`) is the request's outcome given the state — `not_found`, `conflict` —
named by its `tags`, which walk down the route's nested error union: the first is the route
error's member. What the layers below raise is mapped here too (`from_lower`): the Raft layer's
`NodeError` (no leader, no majority, a meta member unreachable) and a timeout are `Unavailable`;
a body aiohttp could not read is `BadInput`. `raise_meta` turns the state machine's answer
(`MetaError`) into an `ApiError`.

`BadInput` quotes what the client sent: its text is cut to `BAD_INPUT_QUOTE_CHARS` and rendered
with `body_bytes()` (a lone surrogate the client sent as `\\ud800` comes back escaped, never as an
encoding error).
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from raftbox.meta import commands as C
from raftbox.raft.node import NodeError

from .wire import json_response, union, upload_write_failed

BAD_INPUT_QUOTE_CHARS = 2000


class ApiFailure(Exception):
    """A request the API answers with an error; subclasses set the class attributes."""

    status: ClassVar[int]
    callers_fault: ClassVar[bool]
    retry_helps: ClassVar[bool]

    def response(self) -> web.Response:
        raise NotImplementedError


class BadInput(ApiFailure):
    """HTTP 400: the request could not be understood (the caller's fault; don't retry)."""

    status = 400
    callers_fault = True
    retry_helps = False

    def __init__(self, route: str, message: str) -> None:
        if len(message) > BAD_INPUT_QUOTE_CHARS:
            message = message[:BAD_INPUT_QUOTE_CHARS] + "..."
        super().__init__(f'Error in call to API function "{route}": {message}')

    def body_bytes(self) -> bytes:
        """The text as UTF-8, whatever the client's text held (lone surrogates escaped)."""
        return str(self).encode("utf-8", "backslashreplace")

    def response(self) -> web.Response:
        return web.Response(status=400, body=self.body_bytes(), content_type="text/plain")


class AuthFailed(ApiFailure):
    """HTTP 401 with a JSON body naming the AuthError tag."""

    status = 401
    callers_fault = True
    retry_helps = False

    def __init__(self, tag: str = "invalid_access_token", extra: dict | None = None) -> None:
        super().__init__(tag)
        self.tag = tag
        self.extra = extra or {}  # a struct member's fields: missing_scope's `required_scope`

    def response(self) -> web.Response:
        body = {"error_summary": f"{self.tag}/..", "error": {".tag": self.tag, **self.extra}}
        return json_response(body, status=401)


class ApiError(ApiFailure):
    """A route error (409 by default): `tags` walk down the nested error union."""

    callers_fault = True
    retry_helps = False

    def __init__(self, tags: list[str], extra: dict | None = None, status: int = 409) -> None:
        super().__init__("/".join(tags))
        self.tags = list(tags)
        self.extra = extra or {}
        self.status = status  # type: ignore[misc]  # 416 for a range not satisfiable

    def error(self) -> dict:
        return union(self.tags, self.extra)

    def body(self) -> dict:
        return {"error_summary": "/".join(self.tags) + "/..", "error": self.error()}

    def response(self) -> web.Response:
        return json_response(self.body(), status=self.status)


class UploadWriteFailed(ApiError):
    """`files/upload`'s path error: `UploadError.path` is the struct UploadWriteFailed
    {reason: WriteError, upload_session_id}, so the reason is flattened next to the tag
    instead of nested. `tags` start with "path"."""

    def error(self) -> dict:
        return upload_write_failed(self.tags[1:], self.extra)


class RateLimited(ApiFailure):
    """HTTP 429 with `Retry-After`: the caller sent too much; retrying after the wait helps."""

    status = 429
    callers_fault = True
    retry_helps = True

    def __init__(self, retry_after_s: int, reason: str = "too_many_requests") -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.reason = reason

    def response(self) -> web.Response:
        body = {
            "error_summary": f"{self.reason}/..",
            "error": {"reason": {".tag": self.reason}, "retry_after": self.retry_after_s},
        }
        resp = json_response(body, status=429)
        resp.headers["Retry-After"] = str(self.retry_after_s)
        return resp


class Unavailable(ApiFailure):
    """HTTP 503: the service cannot answer now (no majority, a member unreachable, blocks
    being garbage-collected); the SDKs retry."""

    status = 503
    callers_fault = False
    retry_helps = True

    def response(self) -> web.Response:
        return web.Response(status=503, text=f"service unavailable: {self}")


def from_lower(route: str, e: BaseException) -> ApiFailure | None:
    """The `ApiFailure` an exception of a lower layer stands for, else None (a bug: 500)."""
    if isinstance(e, ApiFailure):
        return e
    if isinstance(e, RequestPayloadError):  # a broken body (e.g. bad chunked framing)
        return BadInput(route, "request body: malformed")
    if isinstance(e, NodeError | TimeoutError):
        return Unavailable(str(e))
    if isinstance(e, ClientPayloadError | HttpProcessingError):  # a broken-off or garbled body
        return BadInput(route, f"request body: {getattr(e, 'message', None) or e}")
    return None


def raise_meta(result: Any, upload: bool = False) -> Any:
    """The state machine's answer, or its `MetaError` raised as an `ApiError` (with `upload`,
    a path error as `files/upload` shapes it: `UploadWriteFailed`)."""
    if isinstance(result, C.MetaError):
        if upload and result.tags and result.tags[0] == "path":
            raise UploadWriteFailed(result.tags, result.extra)
        raise ApiError(result.tags, result.extra)
    if isinstance(result, dict) and "error" in result:
        raise Unavailable(result["error"])
    return result
