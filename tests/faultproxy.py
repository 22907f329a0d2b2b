"""A small HTTP proxy on 127.0.0.1 in front of the moto server that, for a bounded number of GET
responses, sends the headers (with the full Content-Length) and then only part of the body before
closing the connection: the fault botocore does not retry (``ResponseStreamingError``). It can also
forward a PUT and then close the connection without answering (``drop_next_puts``): the request
landed, the client never heard, and its retry meets its own write."""

from __future__ import annotations

import http.client
import http.server
import threading
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.cuts_left = 0  # GET bodies still to cut short
        self.cut = 0  # bodies cut so far
        self.puts_to_drop = 0  # PUT responses still to swallow after forwarding the request
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with proxy.lock:
                    drop = self.command == "PUT" and proxy.puts_to_drop > 0
                    proxy.puts_to_drop -= int(drop)
                if drop:  # the write happened upstream; the client sees a reset connection
                    conn.close()
                    self.close_connection = True
                    return
                with proxy.lock:
                    cut = self.command == "GET" and len(data) > 1 and proxy.cuts_left > 0
                    if cut:
                        proxy.cuts_left -= 1
                        proxy.cut += 1
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[: len(data) // 2] if cut else data)
                self.wfile.flush()
                if cut:
                    self.close_connection = True
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def cut_next(self, n: int) -> None:
        with self.lock:
            self.cuts_left, self.cut = n, 0

    def drop_next_puts(self, n: int) -> None:
        with self.lock:
            self.puts_to_drop = n

    def close(self) -> None:
        self.server.shutdown()
