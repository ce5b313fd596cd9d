"""A plain HTTP client for tests of the daemon's web endpoint (no redirects followed).

``Web`` talks to one host:port with ``http.client`` so a test sees every status
code and header as sent; ``scrape`` parses the Prometheus text format.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', self.text)
        assert found, "no CSRF token on the page"
        return found.group(1)


class Web:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        form: dict[str, str | list[str]] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            send = dict(headers or {})
            if form is not None:
                body = urlencode(form, doseq=True).encode()
                send["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=send)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, token: str | None = None, cookie: str | None = None) -> Answer:
        return self.request("GET", path, self._auth(token, cookie))

    def post(
        self,
        path: str,
        form: dict[str, str | list[str]],
        token: str | None = None,
        cookie: str | None = None,
    ) -> Answer:
        return self.request("POST", path, self._auth(token, cookie), form=form)

    @staticmethod
    def _auth(token: str | None, cookie: str | None) -> dict[str, str]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = f"mailwright_session={cookie}"
        return headers

    def scrape(self, token: str | None = None) -> dict[tuple[str, Labels], float]:
        answer = self.get("/metrics", token)
        assert answer.status == 200, answer.text
        out: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
