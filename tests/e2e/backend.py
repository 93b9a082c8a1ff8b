#!/usr/bin/env python3
"""Test backends for Lanyard's gRPC end-to-end tests.

One process serves one or more named gRPC servers. Each answers every unary method
(`/lanyard.e2e.Echo/Call`, `/lanyard.e2e.Echo/Other`, `/lanyard.e2e.Admin/Call`, ...) with a
JSON document: its own name, the method it was called with, and the request metadata it saw.
No protobuf: requests and responses are raw bytes.

    backend.py --serve v1=127.0.0.1:0 --serve v2=127.0.0.1:0

Two request headers change the answer, for checks of route timeouts and retries:
`x-sleep-ms: N` makes the backend wait N ms before it answers, and `x-fail-first: KEY:N`
makes it fail the first N calls that carry KEY (counted per process) with UNAVAILABLE.

prints one line per server once all are listening, then `READY`:

    LISTENING v1 127.0.0.1 40123
    LISTENING v2 127.0.0.1 40125
    READY

and serves until stdin closes or it gets SIGTERM/SIGINT.
"""

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "lanyard.e2e.Echo"
CALL = f"/{SERVICE}/Call"
OTHER = f"/{SERVICE}/Other"


def response(name, method, metadata, request):
    """The bytes a backend answers with (also used by the unit checks)."""
    return json.dumps(
        {
            "backend": name,
            "method": method,
            "metadata": {k: v for k, v in metadata if not k.endswith("-bin")},
            "request": request.decode("utf-8", "replace"),
        },
        sort_keys=True,
    ).encode()


class Failures:
    """Calls seen per `x-fail-first` key, shared by every server of the process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}

    def should_fail(self, spec):
        """`KEY:N`: whether this call (counted under KEY) is one of the first N."""
        key, _, n = spec.rpartition(":")
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            return self.seen[key] <= int(n)


FAILURES = Failures()


class AnyMethod(grpc.GenericRpcHandler):
    """Serves every unary method with the backend's name."""

    def __init__(self, name):
        self.name = name

    def service(self, handler_call_details):
        method = handler_call_details.method
        metadata = list(handler_call_details.invocation_metadata or ())

        def handle(request, context):
            headers = dict(metadata)
            if "x-sleep-ms" in headers:
                time.sleep(int(headers["x-sleep-ms"]) / 1000)
            if "x-fail-first" in headers and FAILURES.should_fail(headers["x-fail-first"]):
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name}: failing as asked")
            return response(self.name, method, metadata, request)

        return grpc.unary_unary_rpc_method_handler(handle)


def parse_spec(spec):
    """`name=host:port` -> (name, host, port)."""
    name, sep, address = spec.partition("=")
    host, sep2, port = address.rpartition(":")
    if not sep or not sep2 or not name or not host:
        raise ValueError(f"--serve wants NAME=HOST:PORT, got {spec!r}")
    return name, host, int(port)


def start(specs, workers=4):
    """Starts one server per (name, host, port); returns [(name, host, bound_port, server)]."""
    started = []
    for name, host, port in specs:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            handlers=[AnyMethod(name)],
            options=[("grpc.so_reuseport", 0)],
        )
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind {name} on {host}:{port}")
        server.start()
        started.append((name, host, bound, server))
    return started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="append", required=True, metavar="NAME=HOST:PORT")
    args = parser.parse_args()
    specs = [parse_spec(s) for s in args.serve]
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        parser.error("backend names must be distinct")

    servers = start(specs)
    for name, host, port, _ in servers:
        print(f"LISTENING {name} {host} {port}", flush=True)
    print("READY", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_stdin():
        # The driver holds our stdin open; when it dies, stdin closes and we stop too.
        try:
            sys.stdin.read()
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    for _, _, _, server in servers:
        server.stop(grace=None)


if __name__ == "__main__":
    main()
