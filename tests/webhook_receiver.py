"""Test-only webhook receivers on loopback: a scripted HTTP server that records every request and can
check a Teams Workflows Adaptive Card the way Teams does, and a server that accepts and never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
# Teams renders Adaptive Cards up to 1.5; a newer version is refused.
TEAMS_CARD_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")
KNOWN_ELEMENTS = ("TextBlock", "FactSet", "ColumnSet", "Container", "Image")
KNOWN_ACTIONS = ("Action.OpenUrl",)


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request was read

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (a free port) that records every request and answers ``replies``
    in order, then keeps answering the last one. With ``validate="adaptive_card"`` a body that Teams
    Workflows would refuse gets 400 and the reason instead (and does not use up a scripted reply); a valid
    one gets the next reply, 202 by default as Workflows answer."""

    def __init__(self, replies: Sequence[int | Reply] | None = None, validate: str | None = None) -> None:
        if validate not in (None, "adaptive_card"):
            raise ValueError(f"unknown validation {validate!r}")
        default = 202 if validate else 200
        self.replies = [r if isinstance(r, Reply) else Reply(r) for r in (replies or [default])]
        self.validate = validate
        self.requests: list[Received] = []
        self.rejections: list[str] = []
        self._answered = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # a short poll interval: shutdown() waits for it, once per test
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True
        )

    def url(self, path: str = "/workflows/secret-path?sig=secret-signature") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def _answer(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            if self.validate == "adaptive_card":
                reason = workflows_rejection(received.body)
                if reason:
                    self.rejections.append(reason)
                    return Reply(400, {"Content-Type": "text/plain"}, f"Bad Request: {reason}")
            reply = self.replies[min(self._answered, len(self.replies) - 1)]
            self._answered += 1
            return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received = Received("POST", self.path, dict(self.headers.items()), body, time.monotonic())
                reply = receiver._answer(received)
                data = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:  # keep the test output quiet
                pass

        return Handler


class HangingServer:
    """Accepts TCP connections (the kernel completes them from the backlog) and never reads or answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def url(self, path: str = "/workflows/secret-path?sig=secret-signature") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.socket.close()


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- what Teams Workflows accept ----------------------------------------------------------------------


def workflows_rejection(raw: bytes) -> str | None:
    """Why a Teams Workflows webhook would refuse this body, or None when it would post the card."""
    try:
        message = json.loads(raw)
    except ValueError as error:
        return f"body is not JSON: {error}"
    if not isinstance(message, dict):
        return "body is not a JSON object"
    if message.get("type") != "message":
        return f"type must be 'message', not {message.get('type')!r}"
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "attachments must be a non-empty list"
    for index, attachment in enumerate(attachments):
        where = f"attachments[{index}]"
        if not isinstance(attachment, dict):
            return f"{where} is not an object"
        if attachment.get("contentType") != ADAPTIVE_CARD_CONTENT_TYPE:
            return f"{where}.contentType must be {ADAPTIVE_CARD_CONTENT_TYPE!r}"
        reason = _card_rejection(attachment.get("content"), f"{where}.content")
        if reason:
            return reason
    return None


def _card_rejection(card: Any, where: str) -> str | None:
    if not isinstance(card, dict):
        return f"{where} must be an object"
    if card.get("type") != "AdaptiveCard":
        return f"{where}.type must be 'AdaptiveCard', not {card.get('type')!r}"
    version = card.get("version")
    if not isinstance(version, str) or version not in TEAMS_CARD_VERSIONS:
        return f"{where}.version {version!r} is not one of {', '.join(TEAMS_CARD_VERSIONS)}"
    body = card.get("body")
    if not isinstance(body, list):
        return f"{where}.body must be a list"
    reason = _elements_rejection(body, f"{where}.body")
    if reason:
        return reason
    actions = card.get("actions", [])
    if not isinstance(actions, list):
        return f"{where}.actions must be a list"
    for index, action in enumerate(actions):
        at = f"{where}.actions[{index}]"
        if not isinstance(action, dict) or action.get("type") not in KNOWN_ACTIONS:
            return f"{at}.type must be one of {', '.join(KNOWN_ACTIONS)}"
        if not isinstance(action.get("url"), str) or not action["url"]:
            return f"{at}.url must be a non-empty string"
    return None


def _elements_rejection(elements: list[Any], where: str) -> str | None:
    for index, element in enumerate(elements):
        at = f"{where}[{index}]"
        if not isinstance(element, dict) or element.get("type") not in KNOWN_ELEMENTS:
            kind = element.get("type") if isinstance(element, dict) else element
            return f"{at}.type {kind!r} is not one of {', '.join(KNOWN_ELEMENTS)}"
        kind = element["type"]
        if kind == "TextBlock" and not isinstance(element.get("text"), str):
            return f"{at}.text must be a string"
        if kind == "Image" and not isinstance(element.get("url"), str):
            return f"{at}.url must be a string"
        if kind == "FactSet":
            facts = element.get("facts")
            if not isinstance(facts, list):
                return f"{at}.facts must be a list"
            for number, fact in enumerate(facts):
                if not isinstance(fact, dict) or not all(
                    isinstance(fact.get(key), str) for key in ("title", "value")
                ):
                    return f"{at}.facts[{number}] must have string title and value"
        if kind == "Container":
            items = element.get("items")
            if not isinstance(items, list):
                return f"{at}.items must be a list"
            reason = _elements_rejection(items, f"{at}.items")
            if reason:
                return reason
        if kind == "ColumnSet":
            for number, column in enumerate(element.get("columns", [])):
                if not isinstance(column, dict) or not isinstance(column.get("items", []), list):
                    return f"{at}.columns[{number}] must be a Column with a list of items"
                reason = _elements_rejection(column.get("items", []), f"{at}.columns[{number}].items")
                if reason:
                    return reason
    return None
