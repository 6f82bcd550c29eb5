"""The status page's HTTP server: the standard library's HTTPServer in a thread of its own,
started by the daemon when the config has `web:`, with a bounded pool of handler threads.

Bounded: at most MAX_THREADS connections are served at once, each by a thread started when
needed (and ended when idle); up to MAX_WAITING more wait for one of them, and a connection
beyond those is closed at once. Each request has a deadline as a whole, not per read: it
must have arrived REQUEST_SECONDS after its connection was accepted (or after the answer
before it on a kept-alive connection), wherever it waited (a request that arrived whole
while its connection waited for a thread is still served), and its answer must be sent
within ANSWER_SECONDS. Sixty idle connections without a token once took one thread each
(before any check) and, under systemd's TasksMax, left the daemon no thread for its work.

Read-only: GET and HEAD only, every other method is refused (405) before anything is
read. On a loopback address requests must name a loopback host (a page elsewhere that
points a name of its own at 127.0.0.1, "DNS rebinding", gets 421). With `token_file` (which
an address that is not loopback requires) every request needs the token: as a bearer token
(`Authorization: Bearer ...`, how Prometheus sends it) or as the cookie a browser gets by
opening any page once with `?token=...`.
"""

from __future__ import annotations

import collections
import hmac
import io
import ipaddress
import logging
import select
import socket
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import CaseflowError
from .app import App

log = logging.getLogger("caseflow.web")

COOKIE = "caseflow_token"
MAX_THREADS = 16  # connections served at once, one handler thread each
MAX_WAITING = 64  # accepted connections waiting for a handler; more are closed at once
REQUEST_SECONDS = 5.0  # a whole request, from its connection's accept (or the last answer)
ANSWER_SECONDS = 30.0  # a whole answer, sent to a client that reads it slowly
IDLE_THREAD_SECONDS = 10.0  # a handler thread with no connection to serve ends
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


def _arrived(sock: socket.socket) -> bool:
    """Whether a request's whole head is already in the connection's receive buffer (a
    request that came in time while its connection waited for a thread behind slow ones:
    it is served, not dropped with them)."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        data = sock.recv(65536, socket.MSG_PEEK)
    except OSError:
        return False
    return b"\n\r\n" in data or b"\n\n" in data  # the blank line that ends the head


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each given the time left before the handler's deadline: a
    client trickling a byte a second is dropped at the deadline, not kept for ever."""

    def __init__(self, handler: _Handler):
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._handler.connection.settimeout(left)
        return self._handler.connection.recv_into(buffer)


class _DeadlineWriter(io.BufferedIOBase):
    """The connection's writes, each given the time left before the handler's deadline."""

    def __init__(self, handler: _Handler):
        self._handler = handler

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer could not be sent in time")
        self._handler.connection.settimeout(left)
        self._handler.connection.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Handler(BaseHTTPRequestHandler):
    server_version = "caseflow"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    server: _Server

    def __init__(self, request, client_address, server: _Server, deadline: float):
        self.deadline = deadline  # of the request under way (monotonic)
        self._first = True
        super().__init__(request, client_address, server)

    def setup(self):
        # the deadline-aware files instead of StreamRequestHandler's (a timeout per read)
        self.connection = self.request
        self.rfile = io.BufferedReader(_DeadlineReader(self))
        self.wfile = _DeadlineWriter(self)

    def handle_one_request(self):
        if not self._first:  # the next request on a kept-alive connection: its own deadline
            self.deadline = time.monotonic() + REQUEST_SECONDS
        self._first = False
        super().handle_one_request()

    def send_response(self, code, message=None):
        self.deadline = time.monotonic() + ANSWER_SECONDS  # the request is in: the answer's
        super().send_response(code, message)

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
        status: StatusServer = self.server.status
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
        crowded = {"Connection": "close"} if self.server.crowded() else {}  # others wait
        for key, value in {
            **HEADERS,
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            **crowded,
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


class _Server(HTTPServer):
    """HTTPServer with a bounded pool of handler threads (see the module's doc): the
    serving thread accepts and queues, a handler thread serves one connection at a time."""

    allow_reuse_address = True
    request_queue_size = 64  # the listen backlog, for bursts between two accepts
    status: StatusServer  # the server's own, for its handlers

    def __init__(self, *args, **kwargs):
        self._cond = threading.Condition()
        # accepted connections waiting for a handler: (socket, address, deadline)
        self._waiting: collections.deque = collections.deque()
        self._threads = 0  # handler threads running
        self._idle = 0  # of them, waiting for a connection
        self._serving = 0  # connections taken by a handler thread
        self._closed = False
        self._warned = False
        super().__init__(*args, **kwargs)

    def crowded(self) -> bool:
        """Connections wait for a handler that is busy (an answer then closes its own)."""
        with self._cond:
            return len(self._waiting) > self._idle

    def process_request(self, request, client_address):
        # in the serving thread, right after the accept: queue it, never block here
        deadline = time.monotonic() + REQUEST_SECONDS
        start = False
        with self._cond:
            held = self._serving + len(self._waiting)
            refused = self._closed or held >= MAX_THREADS + MAX_WAITING
            if not refused:
                self._waiting.append((request, client_address, deadline))
                self._cond.notify()
                start = self._idle < len(self._waiting) and self._threads < MAX_THREADS
                if start:
                    self._threads += 1
        if refused:
            log.debug("status page: too many connections, %s closed", client_address)
            self.shutdown_request(request)
        elif start:
            try:
                self._start_handler()
            except RuntimeError as exc:  # "can't start new thread": the task limit
                self._no_thread(exc)

    def _start_handler(self) -> None:
        threading.Thread(target=self._handle, name="status-page-handler", daemon=True).start()

    def _no_thread(self, exc: RuntimeError) -> None:
        """A handler thread could not start: the running ones serve the queue; with none,
        the waiting connections are closed (none is answered, the daemon goes on)."""
        with self._cond:
            self._threads -= 1
            orphans = [] if self._threads else list(self._waiting)
            if orphans:
                self._waiting.clear()
            warn, self._warned = not self._warned, True
        (log.warning if warn else log.debug)(
            "status page: no thread for a connection (%s); %d connection(s) closed",
            exc,
            len(orphans),
        )
        for request, _, _ in orphans:
            self.shutdown_request(request)

    def _next(self):
        """The next waiting connection, or None when the thread is to end (idle, closed)."""
        with self._cond:
            self._idle += 1
            try:
                while not self._waiting and not self._closed:
                    if not self._cond.wait(IDLE_THREAD_SECONDS) and not self._waiting:
                        break
                if self._waiting and not self._closed:
                    self._serving += 1
                    return self._waiting.popleft()
                self._threads -= 1
                return None
            finally:
                self._idle -= 1

    def _handle(self) -> None:
        while (item := self._next()) is not None:
            request, client_address, deadline = item
            try:
                if time.monotonic() >= deadline:  # it waited its whole time for a thread:
                    if not _arrived(request):  # too slow, or behind slow ones
                        continue
                    deadline = time.monotonic() + REQUEST_SECONDS
                _Handler(request, client_address, self, deadline)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                with self._cond:
                    self._serving -= 1

    def server_close(self):
        super().server_close()
        with self._cond:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for request, _, _ in left:
            self.shutdown_request(request)

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
