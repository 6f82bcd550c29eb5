"""The status page's HTTP server: the standard library's ThreadingHTTPServer in a thread of
its own, started by the daemon when the config has `web:`.

Read-only: GET and HEAD only, every other method is refused (405) before anything is
read. On a loopback address requests must name a loopback host (a page elsewhere that
points a name of its own at 127.0.0.1, "DNS rebinding", gets 421). With `token_file` (which
an address that is not loopback requires) every request needs the token: as a bearer token
(`Authorization: Bearer ...`, how Prometheus sends it) or as the cookie a browser gets by
opening any page once with `?token=...`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import CaseflowError
from .app import App

log = logging.getLogger("caseflow.web")

COOKIE = "caseflow_token"
HEADERS = {
    # the page's own script and style only; nothing inline, nothing from elsewhere
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _loopback_name(host_header: str) -> bool:
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "caseflow"
    sys_version = ""
    timeout = 30  # a client that sends nothing for this long is dropped (its thread ends)
    protocol_version = "HTTP/1.1"

    # -- read-only: every method but GET and HEAD is refused ---------------------------
    def _refuse(self):
        self.close_connection = True  # a body it may have sent is not read
        self._send(
            405,
            b"Only GET and HEAD: this page changes nothing.\n",
            "text/plain; charset=utf-8",
            {"Allow": "GET, HEAD", "Connection": "close"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def do_HEAD(self):
        self._get(head=True)

    def do_GET(self):
        self._get(head=False)

    def _get(self, head: bool):
        status: StatusServer = self.server.status  # type: ignore[attr-defined]  # a _Server
        self._head = head
        if status.loopback and not _loopback_name(self.headers.get("Host", "")):
            self._send(
                421, b"This server answers to loopback names only.\n", "text/plain; charset=utf-8"
            )
            return
        if status.token is not None and not self._authorized(status.token):
            return
        try:
            response = status.app.route(self.path)
        except Exception:  # a bug: say so, keep serving
            log.exception("status page: %s failed", urlsplit(self.path).path)
            self._send(500, b"internal error (see the daemon's log)\n", "text/plain; charset=utf-8")
            return
        self._send(response.status, response.body, response.content_type)

    def _authorized(self, token: str) -> bool:
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(
            given[7:].strip().encode(), token.encode()
        ):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        if COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value.encode(), token.encode()):
            return True
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        if hmac.compare_digest((query.get("token") or [""])[0].encode(), token.encode()):
            rest = urlencode(
                [(k, v) for k, vs in query.items() if k != "token" for v in vs], doseq=True
            )
            self._send(
                303,
                b"",
                "text/plain; charset=utf-8",
                {
                    "Location": "/" + parts.path.lstrip("/") + (f"?{rest}" if rest else ""),
                    "Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/",
                },
            )
            return False
        self._send(
            401,
            b"A token is needed: send it as a bearer token (Authorization: Bearer "
            b"...) or open the page once with ?token=...\n",
            "text/plain; charset=utf-8",
            {"WWW-Authenticate": 'Bearer realm="caseflow"'},
        )
        return False

    def _send(self, code: int, body: bytes, content_type: str, extra: dict | None = None):
        self.send_response(code)
        for key, value in {
            **HEADERS,
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            **(extra or {}),
        }.items():
            self.send_header(key, value)
        self.end_headers()
        if not getattr(self, "_head", False) and self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        # to the daemon's log, without the query (it may hold the token)
        log.debug(
            "status page: %s %s %s",
            self.address_string(),
            self.command,
            urlsplit(getattr(self, "path", "") or "").path,
        )

    def log_error(self, format, *args):  # noqa: A002
        log.debug("status page: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    status: StatusServer  # the server's own, for its handlers

    def handle_error(self, request, client_address):
        # a browser that went to another page while an answer was on its way: not news
        log.debug("status page: a request from %s ended early", client_address, exc_info=True)


class StatusServer:
    """The status page and /metrics of one daemon."""

    def __init__(self, config, spec, engine=None):
        self.web = config.web
        self.loopback = self.web.loopback
        self.token = None
        if self.web.token_file is not None:
            self.token = self.web.token_file.read_text(encoding="utf-8").strip()
        self.app = App(config, spec, engine)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.web.port

    @property
    def url(self) -> str:
        host = f"[{self.web.host}]" if ":" in self.web.host else self.web.host
        return f"http://{host}:{self.port}/"

    def start(self) -> StatusServer:
        family = socket.AF_INET6 if ":" in self.web.host else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            self._httpd = server_class((self.web.host, self.web.port), _Handler)
        except OSError as exc:
            self.app.close()
            raise CaseflowError(
                f"web.listen {self.web.host}:{self.web.port}: cannot listen "
                f"there: {exc.strerror or exc}"
            ) from exc
        self._httpd.status = self
        thread = self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            name="status-page",
            kwargs={"poll_interval": 0.5},
            daemon=True,
        )
        thread.start()
        log.info("status page on %s%s", self.url, " (a token is required)" if self.token else "")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._httpd = None
        self.app.close()


def start(config, spec, engine=None) -> StatusServer | None:
    """Start the status page when the config asks for one (`web:`); None otherwise."""
    if config.web is None:
        return None
    return StatusServer(config, spec, engine).start()
