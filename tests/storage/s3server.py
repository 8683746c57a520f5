"""A real S3-compatible server on 127.0.0.1 for tests: moto's S3 in server mode, on a free port,
that a test can stop and start again mid-run (its objects live on in this process while it is
down), with a log of every request it answered and optional injected failures."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import logging

from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise


@dataclass
class Request:
    method: str
    path: str  # /bucket/key
    query: str
    status: int = 0
    range: str | None = None  # the Range header of a partial read

    def bytes_asked(self, size: int) -> int:
        """How many bytes this read asked for, of an object of ``size`` bytes."""
        if not self.range:
            return size
        start, _, end = self.range.removeprefix("bytes=").partition("-")
        if not start:
            return min(size, int(end))
        return min(size - 1, int(end) if end else size - 1) - int(start) + 1


@dataclass
class S3Server:
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    fail: Callable[[Request], int | None] | None = None  # return an HTTP status to answer instead
    _server: object = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", self.port, self._wrap(app), threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and close the socket: new connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=30)
            self._server = None

    def _wrap(self, app):
        def counted(environ, start_response):
            request = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                              range=environ.get("HTTP_RANGE"))
            with self._lock:
                self.requests.append(request)
            status = self.fail(request) if self.fail else None
            if status:
                request.status = status
                start_response(f"{status} Injected", [("Content-Type", "application/xml")])
                return [f"<Error><Code>{'SlowDown' if status == 503 else 'InternalError'}</Code>"
                        f"<Message>injected</Message></Error>".encode()]

            def recording_start(status_line, headers, *rest):
                request.status = int(status_line.split()[0])
                return start_response(status_line, headers, *rest)

            return app(environ, recording_start)

        return counted

    def gets(self, pattern: str = "") -> list[Request]:
        """GET requests (object reads) whose path matches the regular expression ``pattern``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and re.search(pattern, r.path)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
