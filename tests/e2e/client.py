#!/usr/bin/env python3
"""A gRPC client process driven over stdin/stdout, for Lanyard's end-to-end tests.

gRPC reads its xDS bootstrap (GRPC_XDS_BOOTSTRAP) once per process, so each proxyless client
identity (node id, namespace) is its own process. The driver writes one JSON command per line
on stdin; the client answers each with one JSON line on stdout (a long `run` first answers
`{"event": "started"}`). Commands:

    {"op": "ready", "target": "xds:///svc.ns:50051", "method": "/lanyard.e2e.Echo/Call",
     "timeout": 20}
        one call with wait_for_ready: returns once the client has its xDS config and a backend
        answered -> {"ok": true, "backend": "v1", "elapsed": 0.4} or {"ok": false, "error": ...}
    {"op": "calls", "target": ..., "method": ..., "n": 1000, "metadata": [["x-tier", "gold"]],
     "timeout": 5}
        n sequential calls -> {"counts": {"v1": 800, ...}, "errors": {"UNAVAILABLE: ...": 2},
                               "responses": {"v1": <first response of v1>, ...}}
    {"op": "run", "target": ..., "method": ..., "metadata": [...], "max_seconds": 5,
     "stop": {"backend": "v2", "streak": 200}}
        calls back to back until `stop` holds (the last `streak` calls all reached that backend)
        or max_seconds pass -> {"event": "started", "t": ...} then
        {"calls": [[t_sent, t_answered, "v1" | "ERR:CODE: details"], ...], "stopped": "stop"|"time"}
        Times are time.time() (wall clock, comparable with the driver's).
    {"op": "quit"}
"""

import json
import sys
import time

import grpc

_channels = {}


def channel(target):
    if target not in _channels:
        _channels[target] = grpc.insecure_channel(target)
    return _channels[target]


def call(target, method, metadata=(), timeout=5.0, wait_for_ready=False):
    """One unary call; returns (label, response document or None)."""
    stub = channel(target).unary_unary(method)
    try:
        reply = stub(
            b"e2e",
            timeout=timeout,
            metadata=[tuple(m) for m in metadata] or None,
            wait_for_ready=wait_for_ready,
        )
    except grpc.RpcError as e:
        return f"ERR:{e.code().name}: {e.details()}", None
    doc = json.loads(reply)
    return doc["backend"], doc


def op_ready(cmd):
    start = time.time()
    label, doc = call(
        cmd["target"],
        cmd["method"],
        cmd.get("metadata", ()),
        timeout=cmd.get("timeout", 20),
        wait_for_ready=True,
    )
    if doc is None:
        return {"ok": False, "error": label, "elapsed": time.time() - start}
    return {"ok": True, "backend": label, "elapsed": time.time() - start}


def op_calls(cmd):
    counts, errors, responses = {}, {}, {}
    for _ in range(cmd["n"]):
        label, doc = call(cmd["target"], cmd["method"], cmd.get("metadata", ()),
                          timeout=cmd.get("timeout", 5))
        if doc is None:
            errors[label] = errors.get(label, 0) + 1
        else:
            counts[label] = counts.get(label, 0) + 1
            responses.setdefault(label, doc)
    return {"counts": counts, "errors": errors, "responses": responses}


def op_run(cmd, emit):
    emit({"event": "started", "t": time.time()})
    stop = cmd.get("stop")
    deadline = time.time() + cmd["max_seconds"]
    calls, streak, stopped = [], 0, "time"
    while time.time() < deadline:
        t0 = time.time()
        label, _ = call(cmd["target"], cmd["method"], cmd.get("metadata", ()),
                        timeout=cmd.get("timeout", 2))
        calls.append([t0, time.time(), label])
        if stop:
            streak = streak + 1 if label == stop["backend"] else 0
            if streak >= stop["streak"]:
                stopped = "stop"
                break
    return {"calls": calls, "stopped": stopped}


def main():
    out = sys.stdout

    def emit(doc):
        out.write(json.dumps(doc) + "\n")
        out.flush()

    emit({"event": "hello"})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "quit":
                emit({"ok": True})
                break
            elif op == "ready":
                emit(op_ready(cmd))
            elif op == "calls":
                emit(op_calls(cmd))
            elif op == "run":
                emit(op_run(cmd, emit))
            else:
                emit({"error": f"unknown op {op!r}"})
        except Exception as e:  # report, keep serving
            emit({"error": f"{type(e).__name__}: {e}"})
    for ch in _channels.values():
        ch.close()


if __name__ == "__main__":
    main()
