"""HTTP/1.1 framing for the built-in server: a request's head parsed from bytes, a response as one buffer.

Strict where leniency is a risk (RFC 9112): one Host, no folded headers, no conflicting
Content-Length, no chunked bodies (411: the API's bodies are small JSON); bounded line and header
sizes. Refusals are ``Refused`` exceptions carrying the JSON answer.
"""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List, Mapping, Optional

from .. import __version__
from .app import Response, error_response

MAX_REQUEST_LINE = 8190  # bytes; longer is 414 (the limit of nginx and Apache)
MAX_HEADER_BYTES = 64 << 10  # the whole header block; more is 431
MAX_HEADERS = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")
_TARGET = re.compile(r"[\x21-\x7e]+\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REASONS: Dict[int, str] = {}


class Head:
    """A parsed request line and headers."""

    __slots__ = ("end", "headers", "keep_alive", "length", "line", "method", "target")

    def __init__(
        self,
        line: str,
        method: str,
        target: str,
        headers: Dict[str, str],
        length: int,
        keep_alive: bool,
        end: int,
    ) -> None:
        self.line = line
        self.method = method
        self.target = target
        self.headers = headers
        self.length = length
        self.keep_alive = keep_alive
        self.end = end


class Refused(Exception):
    """A request refused before routing; answered with a JSON error and a closed connection."""

    def __init__(self, status: int, code: str, message: str, discard: int = 0) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message)
        self.discard = discard


def parse_head(buf: bytes, max_body: int) -> Optional[Head]:
    """The request line and headers at the start of ``buf``; None while incomplete.

    Raises ``Refused`` for what cannot be served: a malformed request line (400), a target over
    ``MAX_REQUEST_LINE`` (414), headers over ``MAX_HEADER_BYTES``/``MAX_HEADERS`` (431), HTTP/2 or
    later (505), a missing or repeated Host in HTTP/1.1 (400), a chunked body (411), a body over
    ``max_body`` (413).
    """
    start = 0
    while buf.startswith(b"\r\n", start) or buf.startswith(b"\n", start):  # RFC 9112 2.2: tolerated
        start += 2 if buf.startswith(b"\r\n", start) else 1
    match = _HEAD_END.search(buf, start)
    first_end = buf.find(b"\n", start)
    if (first_end < 0 and len(buf) - start > MAX_REQUEST_LINE) or first_end - start > MAX_REQUEST_LINE + 1:
        raise Refused(414, "uri_too_long", f"the request line is over {MAX_REQUEST_LINE} bytes")
    if match is None:
        if len(buf) - start > MAX_HEADER_BYTES:
            raise Refused(431, "headers_too_large", f"the request headers are over {MAX_HEADER_BYTES} bytes")
        return None
    if match.start() - start > MAX_HEADER_BYTES:
        raise Refused(431, "headers_too_large", f"the request headers are over {MAX_HEADER_BYTES} bytes")
    lines = bytes(buf[start : match.start()]).decode("latin-1").split("\n")
    line = lines[0].rstrip("\r")
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _TARGET.match(parts[1]):
        shown = line[:80].encode("ascii", "backslashreplace").decode("ascii")
        raise Refused(400, "bad_request", f"malformed request line {shown!r}; send 'METHOD /path HTTP/1.1'")
    method, target, version_text = parts
    version = _VERSION.match(version_text)
    if version is None:
        raise Refused(400, "bad_request", f"unknown protocol {version_text[:20]!r}; send HTTP/1.1")
    major, minor = int(version.group(1)), int(version.group(2))
    if major >= 2:
        raise Refused(505, "http_version_not_supported", "this server speaks HTTP/1.1 and HTTP/1.0")
    if major < 1:
        raise Refused(400, "bad_request", f"unknown protocol {version_text!r}; send HTTP/1.1")
    if len(lines) - 1 > MAX_HEADERS:
        raise Refused(431, "headers_too_large", f"more than {MAX_HEADERS} request headers")
    headers: Dict[str, str] = {}
    hosts = 0
    lengths = set()
    for raw in lines[1:]:
        text = raw.rstrip("\r")
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.match(name):  # also a folded line (leading space): refused by RFC 9112
            raise Refused(400, "bad_request", f"malformed header line {text[:40]!r}")
        value = value.strip(" \t")
        if "\r" in value or "\x00" in value:
            raise Refused(400, "bad_request", f"malformed value of header {name!r}")
        lowered = name.lower()
        if lowered == "host":
            hosts += 1
        elif lowered == "content-length":
            lengths.add(value)
        headers[name] = value
    if (major, minor) >= (1, 1) and hosts != 1:
        raise Refused(400, "bad_request", "an HTTP/1.1 request needs exactly one Host header")
    if header(headers, "transfer-encoding") is not None:
        raise Refused(411, "length_required", "send a Content-Length, not a chunked body")
    length = 0
    if lengths:
        text = lengths.pop()
        if lengths or not text.isdigit() or not text.isascii():
            raise Refused(400, "bad_request", f"bad Content-Length {text!r}")
        length = int(text)
        if length > max_body:
            raise Refused(413, "too_large", f"request body over {max_body} bytes", discard=length)
    tokens = {t.strip().lower() for t in (header(headers, "connection") or "").split(",")}
    keep_alive = "keep-alive" in tokens if (major, minor) == (1, 0) else "close" not in tokens
    return Head(line, method, target, headers, length, keep_alive, match.end())


def header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def encode_response(response: Response, *, head_only: bool, keep_alive: Optional[bool]) -> bytes:
    """Status line, headers and body as one buffer: written with one send.

    ``keep_alive``: True adds ``Connection: keep-alive`` (an HTTP/1.0 client asked for it), False
    ``Connection: close``, None nothing (HTTP/1.1's default, keep-alive).
    """
    if not _REASONS:
        from http import HTTPStatus

        _REASONS.update({s.value: s.phrase for s in HTTPStatus})
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Server: flowyml-lite/{__version__}",
        f"Date: {_http_date()}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
    ]
    lines.extend(f"{key}: {value}" for key, value in response.headers.items())
    if keep_alive is not None:
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


_date_cache: List[Any] = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        from email.utils import formatdate

        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return str(_date_cache[1])
