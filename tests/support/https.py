"""A real HTTPS server for tests: serves MTA-STS policy files on a free loopback port.

    server = PolicyServer(tmp_path, "mta-sts.b.test")   # certificate for these names
    server.publish("mta-sts.b.test", "version: STSv1\\n...")
    with server:                                        # listening until the block ends
        ...  # server.port, server.cert (trust it: delivery.tls_ca_file), server.requests

Python's ``http.server`` over ``ssl`` on a thread; answers by the Host header, with
the status and Content-Type a test chose (redirects and wrong types are tests too).
POSTs (TLS reports, RFC 8460 5.4) are kept in ``posts`` as (Host, path, Content-Type,
body) and answered ``post_status`` (201 unless a test changes it).
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.security import certificate


@dataclass
class Answer:
    body: bytes
    status: int = 200
    content_type: str = "text/plain"


class PolicyServer:
    def __init__(self, root: Path, *names: str) -> None:
        self.cert, self.key = certificate(root / "https", *names, stem="https-")
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, str]] = []  # (Host, path)
        self.posts: list[tuple[str, str, str, bytes]] = []  # (Host, path, type, body)
        self.post_status = 201
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def publish(
        self, host: str, body: str | bytes, status: int = 200, content_type: str = "text/plain"
    ) -> Self:
        data = body.encode() if isinstance(body, str) else body
        self.answers[host] = Answer(data, status, content_type)
        return self

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = self.headers.get("Host", "")
                server.requests.append((host, self.path))
                answer = server.answers.get(host)
                if answer is None or self.path != "/.well-known/mta-sts.txt":
                    answer = Answer(b"not found", 404)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                if 300 <= answer.status < 400:
                    self.send_header("Location", f"https://{host}/elsewhere")
                self.end_headers()
                self.wfile.write(answer.body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                kind = self.headers.get("Content-Type", "")
                server.posts.append((self.headers.get("Host", ""), self.path, kind, body))
                self.send_response(server.post_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
