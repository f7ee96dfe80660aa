"""A local webhook receiver for the notification tests: a real HTTP server in a thread that
answers each POST with the next of its scripted responses and keeps what it received."""
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`script`: (status, headers) per request in turn; the last one repeats."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                index = min(len(receiver.received), len(receiver.script)) - 1
                status, headers = receiver.script[index]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST  # noqa: N815

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, received: Received) -> bool:
    """What a receiver does: HMAC-SHA256 of `<timestamp>.<body>`, compared in constant time."""
    timestamp = received.headers["X-Task-Chain-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", received.headers["X-Task-Chain-Signature"])
