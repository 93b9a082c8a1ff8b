#!/usr/bin/env python3
"""Lanyard end to end against gRPC's own xDS client (grpcio, `xds:///` targets).

Each scenario writes a config directory, starts `lanyard-controller --config-dir DIR` on
loopback ports, starts gRPC backends (backend.py) and proxyless gRPC clients (client.py, one
process per xDS identity), drives calls and checks where they land. The `kubernetes` scenario
instead starts the loopback Kubernetes API server (`lanyard-test-apiserver`), runs
`lanyard-controller --kubeconfig` against it and drives it with the real kubectl
(`kubernetes_nack` too: a change the gRPC client rejects shows in `kubectl get grpcroute`);
`smi_kubernetes` also runs the real `lanyard-webhook` (a serving certificate made with openssl)
as the SMI CRDs' conversion webhook.

    tests/e2e/setup.sh                        # once: .venv with grpcio
    cargo build --bin lanyard-controller --bin lanyard-test-apiserver --bin lanyard-webhook
    .venv/bin/python tests/e2e/run_e2e.py     # all scenarios
    .venv/bin/python tests/e2e/run_e2e.py -k live --keep

Environment: LANYARD_CONTROLLER (binary; default target/debug/lanyard-controller),
LANYARD_TEST_APISERVER (default: lanyard-test-apiserver beside the controller), LANYARD_WEBHOOK
(default: lanyard-webhook beside the controller), LANYARD_KUBECTL (default /usr/bin/kubectl),
LANYARD_OPENSSL (default /usr/bin/openssl),
LANYARD_E2E_RUST_LOG (controller log filter, default info), LANYARD_E2E_GRPC_TRACE (GRPC_TRACE
for the clients, e.g. xds_client). Ends with `N passed, N failed`; exit 0 only when all pass.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import CALL, OTHER, E2EError  # noqa: E402

NS = "e2e"
# gRPC picks a weighted cluster independently per call, so the count on a backend of weight
# share p over n calls is binomial(n, p), sd = sqrt(n p (1-p)). Accepting mean ± 4 sd fails a
# correct split about once in 16,000 checks (two-sided normal tail 6.3e-5), while n = 1000 keeps
# the band narrow enough to tell the weights from their neighbours: for 80/20 the band is
# 749..851 on the 80 side (a 70/30 or 90/10 route lands at 700 / 900, far outside), for 70/30
# 642..758 (60/40 and 80/20 are outside). 1000 calls take about a second.
SPLIT_CALLS = 1000
SPLIT_SD = 4.0
CHANGE_DEADLINE = 1.0  # seconds from the file write to the client following it
NACK_WITHIN = 2.0  # seconds from the bad write to the NACK on /debug/syncz
NACK_HOLD = 3.0  # seconds the NACK count must stay flat


class Context:
    """What one scenario has: a work dir, a config dir, its child processes, its figures."""

    def __init__(self, name, work_root):
        self.name = name
        self.dir = os.path.join(work_root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = h.ConfigDir(os.path.join(self.dir, "config"))
        self.procs = h.Procs(self.dir)
        self.figures = {}
        self.controller = None
        self.api = None

    def log(self, msg):
        print(f"    {msg}", flush=True)

    def backends(self, names, hosts=None):
        return h.Backends(self.procs, names, hosts=hosts)

    def check_config(self):
        """`lanyard-controller --once` on the config: the manifests translate without errors
        (a broken manifest here is a harness bug, reported as such). Returns the report."""
        proc = subprocess.run(
            [h.controller_path(), "--config-dir", self.config.path, "--once"],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        bad = proc.returncode != 0 or any(
            f"severity: {level}" in proc.stdout for level in ("error", "warning"))
        if bad:
            raise E2EError("the scenario's manifests do not translate cleanly (harness bug?):\n"
                           + proc.stdout[-3000:] + proc.stderr[-3000:])
        return proc.stdout

    def start_controller(self, kubernetes=False):
        """`lanyard-controller --config-dir` on the config dir; with `kubernetes`, instead the
        loopback API server (`self.api`) and `lanyard-controller --kubeconfig` against it."""
        if kubernetes:
            if self.api is None:  # else the scenario started (and filled) its own
                self.api = h.ApiServer(self.procs)
                self.log(f"loopback API server, kubeconfig {self.api.kubeconfig}")
            self.controller = h.Controller(self.procs, None, kubeconfig=self.api.kubeconfig)
        else:
            self.controller = h.Controller(self.procs, self.config.path)
        self.controller.wait_ready()
        self.log(f"controller{' --kubeconfig' if kubernetes else ''}: xds "
                 f"{self.controller.xds_address}, debug {self.controller.debug_address}")
        return self.controller

    def client(self, ns, pod):
        return h.Client(self.procs, self.dir, self.controller.xds_address, ns, pod)

    def failure_report(self):
        parts = []
        for child in self.procs.children:
            parts.append(f"--- {child.name} ({child.log_path}), last lines:\n"
                         f"{child.log_tail(40)}")
        return "\n".join(parts)


def expect_all(client, target, backend, n=20, method=CALL, metadata=()):
    """n calls all reach `backend`."""
    got = client.calls(target, n, method=method, metadata=metadata)
    if got["errors"] or set(got["counts"]) != {backend}:
        raise E2EError(f"{client.node_id}: {method} {list(metadata)} on {target}: expected all "
                       f"{n} on {backend}, got {got['counts']} errors {got['errors']}")
    return got


# --------------------------------------------------------------------------------------------
# 1. Weighted splits


def scenario_weighted(ctx):
    b = ctx.backends(["weighted", "w80", "w20", "weighted-http", "h70", "h30"])
    docs = []
    for name in b.addresses:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.config.write("routes.yaml", [
        h.grpc_route(NS, "weighted", [h.parent(NS, "weighted")], [
            {"backendRefs": [h.backend_ref("w80", 80), h.backend_ref("w20", 20)]},
        ]),
        h.http_route(NS, "weighted-http", [h.parent(NS, "weighted-http")], [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [h.backend_ref("h70", 70), h.backend_ref("h30", 30)]},
        ]),
    ])
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(NS, "client-1")
    cases = [
        ("GRPCRoute", f"xds:///{h.fqdn('weighted', NS)}", {"w80": 80, "w20": 20}),
        ("HTTPRoute", f"xds:///weighted-http.{NS}:{h.GRPC_PORT}", {"h70": 70, "h30": 30}),
    ]
    for kind, target, weights in cases:
        client.ready(target)
        got = client.calls(target, SPLIT_CALLS)
        if got["errors"]:
            raise E2EError(f"{kind} {target}: errors {got['errors']}")
        summary = h.check_split(got["counts"], weights, SPLIT_SD)
        ctx.log(f"{kind} {target}: {summary}")
        ctx.figures[f"{kind} split"] = got["counts"]


# --------------------------------------------------------------------------------------------
# 2. Method, header and path matching


def scenario_matching(ctx):
    names = ["grpc-match", "m-default", "m-other", "m-gold", "m-admin",
             "http-match", "h-default", "h-other", "h-admin", "h-jason", "h-versioned"]
    b = ctx.backends(names)
    docs = []
    for name in names:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.config.write("routes.yaml", [
        h.grpc_route(NS, "grpc-match", [h.parent(NS, "grpc-match")], [
            {"matches": [{"method": {"service": "lanyard.e2e.Echo", "method": "Other"}}],
             "backendRefs": [h.backend_ref("m-other")]},
            {"matches": [{"headers": [{"name": "x-tier", "value": "gold"}]}],
             "backendRefs": [h.backend_ref("m-gold")]},
            {"matches": [{"method": {"type": "RegularExpression",
                                     "service": "lanyard\\.e2e\\.Adm.*"}}],
             "backendRefs": [h.backend_ref("m-admin")]},
            {"backendRefs": [h.backend_ref("m-default")]},
        ]),
        h.http_route(NS, "http-match", [h.parent(NS, "http-match")], [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/lanyard.e2e.Admin"}}],
             "backendRefs": [h.backend_ref("h-admin")]},
            {"matches": [{"path": {"type": "Exact", "value": OTHER}}],
             "backendRefs": [h.backend_ref("h-other")]},
            {"matches": [{"headers": [{"name": "x-user", "value": "jason"}]}],
             "backendRefs": [h.backend_ref("h-jason")]},
            {"matches": [{"headers": [{"name": "x-version", "type": "RegularExpression",
                                       "value": "v[0-9]+"}]}],
             "backendRefs": [h.backend_ref("h-versioned")]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [h.backend_ref("h-default")]},
        ]),
    ])
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(NS, "client-1")
    grpc_target = f"xds:///grpc-match:{h.GRPC_PORT}"  # short name: the client's namespace
    http_target = f"xds:///{h.fqdn('http-match', NS)}"
    admin = "/lanyard.e2e.Admin/Call"
    cases = [
        # GRPCRoute: method, header and regex-service matches; method outranks headers.
        (grpc_target, CALL, (), "m-default"),
        (grpc_target, OTHER, (), "m-other"),
        (grpc_target, CALL, (("x-tier", "gold"),), "m-gold"),
        (grpc_target, CALL, (("x-tier", "silver"),), "m-default"),
        (grpc_target, OTHER, (("x-tier", "gold"),), "m-other"),
        (grpc_target, admin, (), "m-admin"),
        # HTTPRoute on the gRPC path: exact, segment prefix, header (exact and regex).
        (http_target, CALL, (), "h-default"),
        (http_target, OTHER, (), "h-other"),
        (http_target, admin, (), "h-admin"),
        (http_target, "/lanyard.e2e.Administrator/Call", (), "h-default"),
        (http_target, CALL, (("x-user", "jason"),), "h-jason"),
        (http_target, CALL, (("x-user", "jasonx"),), "h-default"),
        (http_target, CALL, (("x-version", "v12"),), "h-versioned"),
        (http_target, CALL, (("x-version", "vx"),), "h-default"),
        (http_target, OTHER, (("x-user", "jason"),), "h-other"),
    ]
    client.ready(grpc_target)
    client.ready(http_target)
    for target, method, metadata, want in cases:
        got = expect_all(client, target, want, n=20, method=method, metadata=metadata)
        seen = got["responses"][want]
        if seen["method"] != method:
            raise E2EError(f"{want} saw method {seen['method']}, sent {method}")
        for k, v in metadata:
            if seen["metadata"].get(k) != v:
                raise E2EError(f"{want} did not see header {k}: {v}: {seen['metadata']}")
        ctx.log(f"{method:34} {str(dict(metadata)):24} -> {want}")
    ctx.figures["matching cases"] = len(cases)


def http_named_service(ns, name, backend):
    """A Service whose port is named `http` and declares no appProtocol (a common label for a
    gRPC service in real clusters), with `backend` as its only endpoint."""
    host, bport = backend
    svc = h.service(ns, name)
    svc["spec"]["ports"] = [{"name": "http", "port": h.GRPC_PORT, "targetPort": bport}]
    eps = h.endpoint_slice(ns, name, [host], bport)
    eps["ports"] = [{"name": "http", "port": bport, "protocol": "TCP"}]
    return [svc, eps]


def scenario_http_port_late_client(ctx):
    """An HTTPRoute with PathPrefix and method matches on a port named `http`: proxyless
    clients must get what gRPC accepts whatever the port declares (Envoy's
    `path_separated_prefix` is NACKed by gRPC). Clients that start after each change have no
    last good configuration to fall back on, so every one of them is a new process: the first
    after the initial config, the second after a change, while the first keeps following."""
    names = ["hp", "hp-admin", "hp-other", "hp-get", "hp-default", "hp-echo"]
    b = ctx.backends(names)
    docs = http_named_service(NS, "hp", b["hp"])
    for name in names[1:]:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)

    def route(extra_rules=()):
        return [h.http_route(NS, "hp", [h.parent(NS, "hp")], list(extra_rules) + [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/lanyard.e2e.Admin"}}],
             "backendRefs": [h.backend_ref("hp-admin")]},
            {"matches": [{"path": {"type": "Exact", "value": OTHER}, "method": "POST"}],
             "backendRefs": [h.backend_ref("hp-other")]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"}],
             "backendRefs": [h.backend_ref("hp-get")]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [h.backend_ref("hp-default")]},
        ])]

    ctx.config.write("routes.yaml", route())
    ctx.check_config()
    ctx.start_controller()
    target = f"xds:///{h.fqdn('hp', NS)}"
    admin = "/lanyard.e2e.Admin/Call"
    first = ctx.client(NS, "client-first")
    first.ready(target)
    cases = [
        (CALL, "hp-default", "no prefix matches; GET never matches a gRPC call"),
        (OTHER, "hp-other", "exact path + POST"),
        (admin, "hp-admin", "segment prefix /lanyard.e2e.Admin"),
        ("/lanyard.e2e.Administrator/Call", "hp-default", "not a segment of the prefix"),
    ]
    for method, want, what in cases:
        expect_all(first, target, want, n=20, method=method)
        ctx.log(f"first client  {method:34} -> {want} ({what})")

    # A change, then a client that starts after it.
    ctx.config.write("routes.yaml", route([
        {"matches": [{"path": {"type": "PathPrefix", "value": "/lanyard.e2e.Echo/"}}],
         "backendRefs": [h.backend_ref("hp-echo")]},
    ]))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        got = first.calls(target, 5, method=CALL)
        if set(got["counts"]) == {"hp-echo"}:
            break
        time.sleep(0.1)
    expect_all(first, target, "hp-echo", n=20, method=CALL)
    late = ctx.client(NS, "client-late")
    late.ready(target)
    for method, want in [(CALL, "hp-echo"), (OTHER, "hp-other"), (admin, "hp-admin")]:
        expect_all(late, target, want, n=20, method=method)
        ctx.log(f"late client   {method:34} -> {want}")
    syncz = ctx.controller.get_json("/debug/syncz")
    for client in (first, late):
        rds = h.type_sync(syncz, client.node_id, "RDS")
        if rds and rds.get("last_nack"):
            raise E2EError(f"{client.node_id} NACKed RDS: {rds['last_nack']}")
    ctx.figures["cases"] = len(cases) + 3


# --------------------------------------------------------------------------------------------
# 3. Live change


def live_route(w1, w2):
    return [h.grpc_route(NS, "live", [h.parent(NS, "live")], [
        {"backendRefs": [h.backend_ref("live-v1", w1), h.backend_ref("live-v2", w2)]},
    ])]


def scenario_live_change(ctx):
    b = ctx.backends(["live", "live-v1", "live-v2"])
    docs = []
    for name in b.addresses:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.config.write("routes.yaml", live_route(90, 10))
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(NS, "client-1")
    target = f"xds:///{h.fqdn('live', NS)}"
    client.ready(target)
    # Warm both clusters so the change measures routing, not first connections.
    expect_some = client.calls(target, 200)
    if set(expect_some["counts"]) != {"live-v1", "live-v2"}:
        raise E2EError(f"90/10 should reach both: {expect_some}")

    latencies, pushes = [], []
    steps = [((0, 100), "live-v1", "live-v2"), ((100, 0), "live-v2", "live-v1"),
             ((0, 100), "live-v1", "live-v2")]
    for i, ((w1, w2), old, new) in enumerate(steps):
        client.start_run(target, max_seconds=6.0, stop={"backend": new, "streak": 300})
        time.sleep(0.5)
        t_write = ctx.config.write("routes.yaml", live_route(w1, w2))
        calls = client.finish_run()
        r = h.analyse_change(calls, t_write, old, new, streak=300)
        label = f"change {i + 1} -> {w1}/{w2}"
        ctx.log(f"{label}: followed {r['latency'] * 1000:.0f} ms after the write "
                f"({len(calls)} calls; before {r['before']}, after {r['after']}, "
                f"errors {r['errors']})" if r["latency"] is not None else
                f"{label}: never followed ({len(calls)} calls; after {r['after']})")
        if not r["old_seen_before"]:
            raise E2EError(f"{label}: {old} never reached before the write: {r}")
        if not r["converged"]:
            raise E2EError(f"{label}: the client did not move to {new} for good: {r}")
        if r["errors"]:
            raise E2EError(f"{label}: {r['errors']} failed calls during the change")
        if i == 0:
            n_before = sum(r["before"].values())
            share = r["before"].get("live-v2", 0)
            lo, hi = h.binomial_band(n_before, 0.1, SPLIT_SD)
            ctx.log(f"before the first change: live-v2 {share}/{n_before} "
                    f"(accepted {lo}..{hi} for 10%)")
            if not lo <= share <= hi:
                raise E2EError(f"90/10 before the change: live-v2 got {share}/{n_before}")
        rds = h.type_sync(ctx.controller.get_json("/debug/syncz"), client.node_id, "RDS")
        if not rds.get("version_sent") or rds.get("version_acked") != rds.get("version_sent"):
            raise E2EError(f"{label}: RDS not ACKed: {rds}")
        pushed = h.epoch(rds["last_push"]) - t_write
        ctx.log(f"{label}: RDS pushed {pushed * 1000:.0f} ms after the write, and ACKed")
        pushes.append(pushed)
        latencies.append(r["latency"])
        if r["latency"] > CHANGE_DEADLINE:
            raise E2EError(f"{label}: took {r['latency']:.3f}s, over {CHANGE_DEADLINE}s")
    ctx.figures["live change: client followed after write (ms)"] = [
        round(x * 1000) for x in latencies]
    ctx.figures["live change: RDS pushed after write (ms)"] = [round(x * 1000) for x in pushes]


# --------------------------------------------------------------------------------------------
# 4. A change the client NACKs

# RE2 (gRPC's and Envoy's regex engine) rejects counted repetitions above 1000 ("bad
# repetition operator"). Lanyard checks regexes with RE2 before it publishes anything, so a
# NACK needs a hole on purpose: debug builds of the controller let through the one pattern
# named by LANYARD_TEST_ONLY_UNCHECKED_REGEX (release builds never read it). Every controller
# this suite starts inherits it; only the NACK scenarios use the pattern.
NACK_REGEX = "a{1001}"
os.environ["LANYARD_TEST_ONLY_UNCHECKED_REGEX"] = NACK_REGEX


def nack_route(backend, bad):
    rules = []
    if bad:
        rules.append({"matches": [{"headers": [{"name": "x-bad", "type": "RegularExpression",
                                                "value": NACK_REGEX}]}],
                      "backendRefs": [h.backend_ref(backend)]})
    rules.append({"backendRefs": [h.backend_ref(backend)]})
    return [h.grpc_route(NS, "nack", [h.parent(NS, "nack")], rules)]


def nack_count(controller):
    """NACKs the server counted, all types (`lanyard_xds_nacks_total`)."""
    return h.metric_sum(controller.metrics(), "lanyard_xds_nacks_total")


def scenario_nack(ctx):
    b = ctx.backends(["nack", "n-before", "n-after"])
    docs = []
    for name in b.addresses:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.config.write("routes.yaml", nack_route("n-before", bad=False))
    ctx.check_config()
    c = ctx.start_controller()
    client = ctx.client(NS, "client-1")
    target = f"xds:///{h.fqdn('nack', NS)}"
    client.ready(target)
    expect_all(client, target, "n-before", n=50)
    rds = h.type_sync(c.get_json("/debug/syncz"), client.node_id, "RDS")
    good_version = rds.get("version_acked")
    if not good_version or rds.get("version_sent") != good_version or rds.get("last_nack"):
        raise E2EError(f"before the bad change RDS should be acked and NACK-free: {rds}")
    base = nack_count(c)

    client.start_run(target, max_seconds=0.5 + NACK_WITHIN + NACK_HOLD + 0.5)
    time.sleep(0.5)
    t_write = ctx.config.write("routes.yaml", nack_route("n-after", bad=True))

    deadline = time.monotonic() + NACK_WITHIN
    while True:
        rds = h.type_sync(c.get_json("/debug/syncz"), client.node_id, "RDS")
        if rds.get("last_nack"):
            break
        if time.monotonic() > deadline:
            raise E2EError(f"no NACK on /debug/syncz within {NACK_WITHIN}s of the bad change:\n"
                           + json.dumps(c.get_json("/debug/syncz"), indent=1)[:3000])
        time.sleep(0.05)
    t_nack = time.time() - t_write
    # The translator accepts the route (checked after the NACK was timed: `--once` is a
    # process of its own, slow to start on a loaded machine): it is the client that refuses it.
    ctx.check_config()
    if t_nack > NACK_WITHIN:
        raise E2EError(f"the NACK showed only {t_nack:.2f}s after the write (over {NACK_WITHIN}s)")
    first = nack_count(c)
    nack = rds["last_nack"]
    ctx.log(f"RDS NACK on /debug/syncz {t_nack * 1000:.0f} ms after the write: version "
            f"{nack.get('version')}, message: {nack.get('message')}")
    if "regex" not in str(nack.get("message", "")).lower():
        raise E2EError(f"the NACK does not carry the client's message: {nack}")
    if nack.get("version") != rds.get("version_sent"):
        raise E2EError(f"the NACKed version is not the one sent: {rds}")
    if rds.get("version_acked") != good_version:
        raise E2EError(f"the acked version moved ({good_version} -> {rds.get('version_acked')})")
    pushes = rds.get("pushes")

    time.sleep(NACK_HOLD)
    held = nack_count(c)
    rds_held = h.type_sync(c.get_json("/debug/syncz"), client.node_id, "RDS")
    ctx.log(f"lanyard_xds_nacks_total: {base:g} before, {first:g} at the NACK, {held:g} "
            f"{NACK_HOLD:g}s later; RDS pushes to the client {pushes} -> "
            f"{rds_held.get('pushes')}")
    if first <= base:
        raise E2EError(f"/metrics does not count the NACK ({base} -> {first})")
    if held != first or rds_held.get("pushes") != pushes:
        raise E2EError(f"re-pushed in a loop: NACKs {first} -> {held}, RDS pushes {pushes} -> "
                       f"{rds_held.get('pushes')} in {NACK_HOLD}s")

    calls = client.finish_run()
    labels = {}
    for call in calls:
        labels[call[2]] = labels.get(call[2], 0) + 1
    ctx.log(f"calls from before the bad write to {NACK_HOLD:g}s after the NACK: {labels}")
    if set(labels) != {"n-before"}:
        raise E2EError(f"the client left its last good config: {labels}")
    if calls[-1][0] < t_write + t_nack + NACK_HOLD:
        raise E2EError("the calls stopped before the hold period ended")

    # The next good change goes through, and is ACKed.
    t_fix = ctx.config.write("routes.yaml", nack_route("n-after", bad=False))
    client.start_run(target, max_seconds=5.0, stop={"backend": "n-after", "streak": 100})
    calls = client.finish_run()
    r = h.analyse_change(calls, t_fix, "n-before", "n-after", streak=100)
    if not r["converged"] or r["errors"]:
        raise E2EError(f"the client did not take the fixed route: {r}")
    ctx.log(f"fixed route followed {r['latency'] * 1000:.0f} ms after the write")
    rds = h.type_sync(c.get_json("/debug/syncz"), client.node_id, "RDS")
    if rds.get("version_acked") != rds.get("version_sent") or nack_count(c) != held:
        raise E2EError(f"the fixed route is not cleanly ACKed: {rds}, NACKs {nack_count(c)}")
    ctx.figures["NACK on syncz after write (ms)"] = round(t_nack * 1000)
    ctx.figures["lanyard_xds_nacks_total (before, at NACK, +3s)"] = [base, first, held]
    ctx.figures["NACK message"] = nack.get("message")


# --------------------------------------------------------------------------------------------
# 5. Consumer and producer routes


def scenario_consumer_producer(ctx):
    b = ctx.backends(["cart", "cart-v1", "cart-v2"])
    docs = [h.namespace(ns) for ns in ("shop", "web", "other")]
    for name in b.addresses:
        docs += h.backend_service("shop", name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.config.write("routes.yaml", [
        # Producer route: every client of shop/cart goes to v1...
        h.grpc_route("shop", "cart-stable", [h.parent("shop", "cart")], [
            {"backendRefs": [h.backend_ref("cart-v1")]},
        ]),
        # ...except clients in namespace web, whose own (consumer) route sends them to v2.
        h.grpc_route("web", "cart-web", [h.parent("shop", "cart", namespace_="shop")], [
            {"backendRefs": [h.backend_ref("cart-v2", ns="shop")]},
        ]),
        h.reference_grant("shop", "web-routes", "GRPCRoute", "web"),
    ])
    ctx.check_config()
    ctx.start_controller()
    target = f"xds:///{h.fqdn('cart', 'shop')}"
    expected = [("web", "web-1", "cart-v2"), ("other", "other-1", "cart-v1"),
                ("shop", "shop-1", "cart-v1")]
    clients = [(ctx.client(ns, pod), want) for ns, pod, want in expected]
    for client, want in clients:
        client.ready(target)
        expect_all(client, target, want, n=50)
        ctx.log(f"client {client.node_id} (namespace {client.namespace}) -> {want}")
    # The namespace-relative short form resolves for the consumer too.
    web = clients[0][0]
    expect_all(web, f"xds:///cart.shop:{h.GRPC_PORT}", "cart-v2", n=20)
    # The debug endpoint's config dump shows each proxy its own variant of the route.
    for client, want in clients:
        routes = route_dump(ctx.controller, client.node_id)
        other = {"cart-v1", "cart-v2"} - {want}
        if h.outbound_cluster(want, "shop") not in routes or any(
                h.outbound_cluster(o, "shop") in routes for o in other):
            raise E2EError(f"config_dump of {client.node_id}: routes should use {want} only: "
                           f"{routes[:2000]}")
    ctx.figures["consumer/producer"] = {c.node_id: w for c, w in clients}


def route_dump(controller, node_id):
    """The RoutesConfigDump part of /debug/config_dump?proxy=node_id, as JSON text."""
    dump = controller.get_json(f"/debug/config_dump?proxy={node_id}")
    routes = [c for c in dump.get("configs", []) if "RoutesConfigDump" in c.get("@type", "")]
    if not routes:
        raise E2EError(f"no RoutesConfigDump for {node_id}: {json.dumps(dump)[:1000]}")
    return json.dumps(routes)


# --------------------------------------------------------------------------------------------
# 6. Kubernetes mode: kubectl against the loopback API server

K8S_NS = "k8s"
K8S_WEIGHTS = {"k-v1": 70, "k-v2": 30}  # k-v2 is the share that breaks
STATUS_WITHIN = 10.0  # seconds for route status (and the client) to follow a kubectl change


def k8s_route(backends=("k-v1", "k-v2")):
    return h.http_route(K8S_NS, "k-cart", [h.parent(K8S_NS, "k-cart")], [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "backendRefs": [h.backend_ref(b, K8S_WEIGHTS[b]) for b in backends]},
    ])


def wait_route_status(ctx, api, what, ok):
    """Polls `kubectl get httproute k-cart -o json` until `ok(conditions)`; returns them."""
    deadline = time.monotonic() + STATUS_WITHIN
    while True:
        obj = json.loads(api.kubectl("get", "httproute", "k-cart", "-n", K8S_NS, "-o", "json"))
        conds = h.route_conditions(obj)
        if ok(conds):
            return conds
        if time.monotonic() > deadline:
            raise E2EError(f"route status never showed {what} within {STATUS_WITHIN}s: "
                           f"{json.dumps(obj.get('status'))[:2000]}")
        time.sleep(0.1)


def cond_is(conds, type_, status, reason=None):
    c = conds.get(type_) or {}
    return c.get("status") == status and (reason is None or c.get("reason") == reason)


def wait_calls(client, target, what, ok, n=50):
    """Batches of `n` calls until `ok(result)`, within STATUS_WITHIN; returns when it holds."""
    deadline = time.monotonic() + STATUS_WITHIN
    while True:
        got = client.calls(target, n)
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise E2EError(f"{client.node_id}: {what} not seen within {STATUS_WITHIN}s: {got}")


def scenario_kubernetes(ctx):
    b = ctx.backends(["k-cart", "k-v1", "k-v2"])
    docs = [h.namespace(K8S_NS)]
    for name in b.addresses:
        docs += h.backend_service(K8S_NS, name, b[name])
    docs.append(k8s_route())
    # The same manifests through the file source first: they translate cleanly.
    ctx.config.write("k8s.yaml", docs)
    ctx.check_config()
    ctx.start_controller(kubernetes=True)
    api = ctx.api
    api.apply(docs)
    wait_route_status(ctx, api, "Accepted and ResolvedRefs", lambda c: cond_is(
        c, "Accepted", "True") and cond_is(c, "ResolvedRefs", "True"))
    shown = api.kubectl("get", "httproute", "k-cart", "-n", K8S_NS, "-o", "yaml")
    for needle in ("type: Accepted", "type: ResolvedRefs", h.CONTROLLER_NAME):
        if needle not in shown:
            raise E2EError(f"`kubectl get httproute -o yaml` lacks {needle!r}:\n{shown}")
    ctx.log("kubectl get httproute -o yaml: Accepted=True, ResolvedRefs=True")

    client = ctx.client(K8S_NS, "client-1")
    target = f"xds:///{h.fqdn('k-cart', K8S_NS)}"
    client.ready(target)
    got = client.calls(target, SPLIT_CALLS)
    if got["errors"]:
        raise E2EError(f"healthy route: errors {got['errors']}")
    summary = h.check_split(got["counts"], K8S_WEIGHTS, SPLIT_SD)
    ctx.log(f"healthy: {summary}")
    ctx.figures["healthy split"] = got["counts"]

    # Break the reference: the backend Service k-v2 goes away.
    t_break = time.monotonic()
    api.kubectl("delete", "service", "k-v2", "-n", K8S_NS)
    conds = wait_route_status(ctx, api, "ResolvedRefs=False/BackendNotFound", lambda c: cond_is(
        c, "ResolvedRefs", "False", "BackendNotFound"))
    t_status = time.monotonic() - t_break
    if not cond_is(conds, "Accepted", "True"):
        raise E2EError(f"a missing backend must leave the route Accepted: {conds}")
    shown = api.kubectl("get", "httproute", "k-cart", "-n", K8S_NS, "-o", "yaml")
    if "BackendNotFound" not in shown:
        raise E2EError(f"`kubectl get httproute -o yaml` lacks BackendNotFound:\n{shown}")
    ctx.log(f"service k-v2 deleted: ResolvedRefs=False/BackendNotFound after "
            f"{t_status * 1000:.0f} ms ({conds['ResolvedRefs'].get('message')})")
    # The client follows once a batch reaches k-v1 only, some calls failing.
    wait_calls(client, target, "the broken share failing",
               lambda g: g["errors"] and set(g["counts"]) == {"k-v1"})
    t_client = time.monotonic() - t_break
    got = client.calls(target, SPLIT_CALLS, timeout=120.0)
    failed = sum(got["errors"].values())
    n = failed + sum(got["counts"].values())
    lo, hi = h.binomial_band(n, K8S_WEIGHTS["k-v2"] / sum(K8S_WEIGHTS.values()), SPLIT_SD)
    ctx.log(f"broken: {failed}/{n} failed ({100 * failed / n:.1f}%, broken share 30%, "
            f"accepted {lo}..{hi}); succeeded {got['counts']}; errors {got['errors']}")
    if set(got["counts"]) != {"k-v1"}:
        raise E2EError(f"the healthy share should all reach k-v1: {got['counts']}")
    if not lo <= failed <= hi:
        raise E2EError(f"failed fraction {failed}/{n} outside {lo}..{hi} for a 30% share")
    if not all("UNAVAILABLE" in e for e in got["errors"]):
        raise E2EError(f"the broken share should fail UNAVAILABLE: {got['errors']}")
    ctx.figures["broken: failed/calls"] = [failed, n]
    ctx.figures["broken: succeeded"] = got["counts"]
    ctx.figures["broken: status after delete (ms)"] = round(t_status * 1000)
    ctx.figures["broken: client following after delete (ms)"] = round(t_client * 1000)

    # Fix it: the Service comes back.
    t_fix = time.monotonic()
    api.apply(h.backend_service(K8S_NS, "k-v2", b["k-v2"]))
    wait_route_status(ctx, api, "ResolvedRefs=True again", lambda c: cond_is(
        c, "ResolvedRefs", "True") and cond_is(c, "Accepted", "True"))
    t_status = time.monotonic() - t_fix
    wait_calls(client, target, "recovery",
               lambda g: not g["errors"] and set(g["counts"]) == set(K8S_WEIGHTS), n=100)
    t_client = time.monotonic() - t_fix
    got = client.calls(target, SPLIT_CALLS)
    if got["errors"]:
        raise E2EError(f"recovered route: errors {got['errors']}")
    summary = h.check_split(got["counts"], K8S_WEIGHTS, SPLIT_SD)
    ctx.log(f"fixed: ResolvedRefs=True after {t_status * 1000:.0f} ms, client recovered "
            f"after {t_client * 1000:.0f} ms; {summary}")
    ctx.figures["recovered split"] = got["counts"]
    ctx.figures["fixed: status / client after apply (ms)"] = [round(t_status * 1000),
                                                               round(t_client * 1000)]


NACK_CONDITION = "lanyard.dev/ProxiesRejected"
NACK_STATUS_WITHIN = 15.0  # seconds for a NACK (and its clearing) to show in route status


def k8s_nack_route(backend, bad):
    """The GRPCRoute `k-nack` on Service k-nack; with `bad`, a first rule whose header regex
    gRPC's RE2 refuses (the test-only hole, see NACK_REGEX)."""
    route = nack_route(backend, bad)[0]
    route["metadata"] = {"name": "k-nack", "namespace": K8S_NS}
    route["spec"]["parentRefs"] = [h.parent(K8S_NS, "k-nack")]
    return route


def wait_grpcroute(api, what, ok, within=NACK_STATUS_WITHIN):
    """Polls `kubectl get grpcroute k-nack -o json` until `ok(conditions)`; returns
    (conditions, seconds waited)."""
    start = time.monotonic()
    while True:
        obj = json.loads(api.kubectl("get", "grpcroute", "k-nack", "-n", K8S_NS, "-o", "json"))
        conds = h.route_conditions(obj)
        if ok(conds):
            return conds, time.monotonic() - start
        if time.monotonic() - start > within:
            raise E2EError(f"route status never showed {what} within {within}s: "
                           f"{json.dumps(obj.get('status'))[:3000]}")
        time.sleep(0.2)


def scenario_kubernetes_nack(ctx):
    """NACKs in route status: a GRPCRoute applied with kubectl, a real gRPC client on it; an
    edit the client refuses (its RE2 rejects the header regex) puts the `lanyard.dev/
    ProxiesRejected` condition, naming the RouteConfiguration and the client's message, into
    `kubectl get grpcroute -o yaml`, while the client keeps its last good config; fixing the
    route clears the condition."""
    b = ctx.backends(["k-nack", "kn-before", "kn-after"])
    docs = [h.namespace(K8S_NS)]
    for name in b.addresses:
        docs += h.backend_service(K8S_NS, name, b[name])
    ctx.start_controller(kubernetes=True)
    api = ctx.api
    api.apply(docs + [k8s_nack_route("kn-before", bad=False)])
    wait_grpcroute(api, "Accepted", lambda c: cond_is(c, "Accepted", "True"))
    client = ctx.client(K8S_NS, "client-1")
    target = f"xds:///{h.fqdn('k-nack', K8S_NS)}"
    client.ready(target)
    expect_all(client, target, "kn-before", n=20)

    t_bad = time.monotonic()
    api.apply([k8s_nack_route("kn-after", bad=True)])
    conds, waited = wait_grpcroute(api, NACK_CONDITION, lambda c: cond_is(
        c, NACK_CONDITION, "True", "Rejected"))
    t_status = time.monotonic() - t_bad
    cond = conds[NACK_CONDITION]
    rds_name = h.fqdn("k-nack", K8S_NS)
    message = cond.get("message", "")
    ctx.log(f"{NACK_CONDITION} after {t_status * 1000:.0f} ms: {message}")
    if not message.startswith(f"1 proxy rejected RouteConfiguration {rds_name} (version "):
        raise E2EError(f"the condition does not name the proxy count and resource: {cond}")
    if "regex" not in message.lower():
        raise E2EError(f"the condition does not carry the client's message: {cond}")
    if not cond_is(conds, "Accepted", "True"):
        raise E2EError(f"the translator accepted the route; Accepted should stay True: {conds}")
    shown = api.kubectl("get", "grpcroute", "k-nack", "-n", K8S_NS, "-o", "yaml")
    for needle in (f"type: {NACK_CONDITION}", "reason: Rejected", rds_name):
        if needle not in shown:
            raise E2EError(f"`kubectl get grpcroute -o yaml` lacks {needle!r}:\n{shown}")
    ctx.log("kubectl get grpcroute -o yaml shows the rejection")
    # The live report shows the same condition.
    report = ctx.controller.get_json("/debug/translation")
    entry = [e for e in report.get("status", []) if e.get("name") == "k-nack"]
    live = [c for e in entry for p in e["status"]["parents"] for c in p["conditions"]
            if c["type"] == NACK_CONDITION]
    if not live or live[0]["message"] != message:
        raise E2EError(f"/debug/translation lacks the condition: {json.dumps(entry)[:2000]}")
    # The client refused the change: it keeps calling kn-before.
    expect_all(client, target, "kn-before", n=20)
    # The condition is steady: no rewrite while nothing changes.
    rv = json.loads(api.kubectl("get", "grpcroute", "k-nack", "-n", K8S_NS, "-o", "json"))[
        "metadata"]["resourceVersion"]
    time.sleep(2.0)
    again = json.loads(api.kubectl("get", "grpcroute", "k-nack", "-n", K8S_NS, "-o", "json"))
    if again["metadata"]["resourceVersion"] != rv:
        raise E2EError(f"the route was rewritten with nothing changed: {rv} -> "
                       f"{again['metadata']['resourceVersion']}: {json.dumps(again['status'])}")

    t_fix = time.monotonic()
    api.apply([k8s_nack_route("kn-after", bad=False)])
    wait_calls(client, target, "the fixed route", lambda g: not g["errors"]
               and set(g["counts"]) == {"kn-after"})
    conds, _ = wait_grpcroute(api, f"{NACK_CONDITION} cleared",
                              lambda c: NACK_CONDITION not in c)
    t_clear = time.monotonic() - t_fix
    if not cond_is(conds, "Accepted", "True") or not cond_is(conds, "ResolvedRefs", "True"):
        raise E2EError(f"the fixed route should be Accepted and ResolvedRefs: {conds}")
    ctx.log(f"fixed: the client follows and the condition cleared after {t_clear * 1000:.0f} ms")
    report = ctx.controller.get_json("/debug/translation")
    if NACK_CONDITION in json.dumps(report):
        raise E2EError(f"/debug/translation still shows the condition: {json.dumps(report)[:2000]}")
    ctx.figures["condition after the bad apply (ms)"] = round(t_status * 1000)
    ctx.figures["cleared after the fix (ms)"] = round(t_clear * 1000)
    ctx.figures["condition message"] = message


# --------------------------------------------------------------------------------------------
# 7. SMI TrafficSplit and HTTPRouteGroup
#
# Here backends are pods: each listens on its own loopback address (127.0.0.x), all on one port,
# and a Service's EndpointSlice lists the pods its selector matches. A pod is named
# `<service>-<letter>` (`smi-v1-a` is a pod of Service `smi-v1`), so `by_service` turns the
# client's per-pod counts into per-Service counts.

SMI_NS = "smi"


def pods(prefix, *names):
    """{pod: 127.0.0.x} for `names`, addresses from `prefix` (e.g. "127.0.0.1" -> .10, .11)."""
    return {name: f"{prefix}{i}" for i, name in enumerate(names)}


def by_service(counts):
    """{pod: calls} -> {service: calls} (pod `svc-x` belongs to Service `svc`)."""
    out = {}
    for pod, n in counts.items():
        svc = pod.rsplit("-", 1)[0]
        out[svc] = out.get(svc, 0) + n
    return out


def smi_services(b, services):
    """Services and EndpointSlices: `services` is [(name, selector, [pods])]."""
    docs = [h.namespace(SMI_NS)]
    for name, selector, members in services:
        port = b[members[0]][1]
        docs += h.pod_service(SMI_NS, name, selector, [b[p][0] for p in members], port)
    return docs


def route_clusters(controller, node_id, root):
    """Where the routes of Service `root` (route configuration `<fqdn>:<port>`) send calls,
    from /debug/config_dump?proxy=node_id: [(cluster, or {cluster: weight}, match), ...].
    grpcio opens one xDS stream per channel target, all with the same node id, and the dump
    shows the newest stream only: call it right after the client's first call to `root`, or
    give each target its own client."""
    dump = controller.get_json(f"/debug/config_dump?proxy={node_id}")
    name = h.fqdn(root, SMI_NS)
    found = []
    for cfg in dump.get("configs", []):
        if "RoutesConfigDump" not in cfg.get("@type", ""):
            continue
        for rc in cfg.get("dynamic_route_configs", []) + cfg.get("static_route_configs", []):
            rc = rc.get("route_config") or {}
            if rc.get("name") != name:
                continue
            for vh in rc.get("virtual_hosts", []):
                for r in vh.get("routes", []):
                    action = r.get("route") or {}
                    if "weighted_clusters" in action:
                        target = {c["name"]: c.get("weight")
                                  for c in action["weighted_clusters"]["clusters"]}
                    else:
                        target = action.get("cluster")
                    found.append((target, r.get("match")))
    return found


def scenario_smi_split(ctx):
    """SMI TrafficSplit v1alpha2 90/10 (and v1alpha1 with quantity weights 900m/100m) on a root
    Service whose own selector (and EndpointSlice) also matches both versions' pods: calls to
    the root follow the weights across the backend Services, each Service reached through its
    own endpoints (the root's endpoints alone would give v2 a third of the calls), and the
    backend Services called directly answer only from their own pods."""
    p = pods("127.0.0.1", "smi-v1-a", "smi-v1-b", "smi-v2-a", "qty-v1-a", "qty-v2-a")
    b = ctx.backends(list(p), hosts=p)
    ctx.config.write("services.yaml", smi_services(b, [
        # Root selects app=smi: every version's pods, as in a plain Deployment-per-version setup.
        ("smi", {"app": "smi"}, ["smi-v1-a", "smi-v1-b", "smi-v2-a"]),
        ("smi-v1", {"app": "smi", "version": "v1"}, ["smi-v1-a", "smi-v1-b"]),
        ("smi-v2", {"app": "smi", "version": "v2"}, ["smi-v2-a"]),
        ("qty", {"app": "qty"}, ["qty-v1-a", "qty-v2-a"]),
        ("qty-v1", {"app": "qty", "version": "v1"}, ["qty-v1-a"]),
        ("qty-v2", {"app": "qty", "version": "v2"}, ["qty-v2-a"]),
    ]))
    ctx.config.write("splits.yaml", [
        h.traffic_split(SMI_NS, "smi-canary", "smi", [("smi-v1", 90), ("smi-v2", 10)],
                        version="v1alpha2"),
        h.traffic_split(SMI_NS, "qty-canary", "qty", [("qty-v1", "900m"), ("qty-v2", "100m")],
                        version="v1alpha1"),
    ])
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(SMI_NS, "client-1")
    cases = [("v1alpha2 90/10", "smi", {"smi-v1": 90, "smi-v2": 10}),
             ("v1alpha1 900m/100m", "qty", {"qty-v1": 90, "qty-v2": 10})]
    for label, root, weights in cases:
        target = f"xds:///{h.fqdn(root, SMI_NS)}"
        client.ready(target)
        got = client.calls(target, SPLIT_CALLS)
        if got["errors"]:
            raise E2EError(f"{label} {target}: expected no failed calls, got {got['errors']} "
                           f"(succeeded {got['counts']})")
        services = by_service(got["counts"])
        try:
            summary = h.check_split(services, weights, SPLIT_SD)
        except E2EError as e:
            raise E2EError(f"{label} {target}: expected the TrafficSplit weights {weights}, "
                           f"per pod {got['counts']}: {e}; route in config_dump: "
                           f"{route_clusters(ctx.controller, client.node_id, root)}") from None
        ctx.log(f"{label} {target}: {summary}; per pod {got['counts']}")
        ctx.figures[f"{label} per pod"] = got["counts"]
        # The config the client got: one weighted route over the backend Services' clusters,
        # never the root's own cluster.
        routes = route_clusters(ctx.controller, client.node_id, root)
        want = {h.outbound_cluster(s, SMI_NS): w for s, w in weights.items()}
        weighted = [t for t, _ in routes if isinstance(t, dict)]
        share = lambda ws: {c: round(w / sum(ws.values()), 6) for c, w in ws.items()}
        if not weighted or any(share(t) != share(want) for t in weighted) or any(
                t == h.outbound_cluster(root, SMI_NS) for t, _ in routes):
            raise E2EError(f"{label}: config_dump route of {root} should split {want} "
                           f"(in proportion), got {routes}")
        ctx.log(f"{label}: config_dump route of {root}: {weighted[0]}")
    # The backend Services directly: only their own pods, though the root selects them all.
    own = {"smi-v1": {"smi-v1-a", "smi-v1-b"}, "smi-v2": {"smi-v2-a"},
           "qty-v1": {"qty-v1-a"}, "qty-v2": {"qty-v2-a"}}
    direct = {}
    for svc, members in own.items():
        target = f"xds:///{h.fqdn(svc, SMI_NS)}"
        client.ready(target)
        got = client.calls(target, 100)
        if got["errors"] or not got["counts"] or not set(got["counts"]) <= members:
            raise E2EError(f"{svc} called directly: expected all 100 calls on its own pods "
                           f"{sorted(members)}, got {got['counts']} errors {got['errors']}")
        direct[svc] = got["counts"]
        ctx.log(f"{svc} directly -> {got['counts']}")
    ctx.figures["direct calls per pod"] = direct


FLAGGER_STEPS = (10, 25, 50, 100)
FLAGGER_RUN = 0.5 + CHANGE_DEADLINE + 1.5  # seconds of calls around each write


def flagger_split(w):
    """The TrafficSplit Flagger keeps for canary analysis of `podinfo` at canary weight `w`
    (smi:v1alpha3 mesh provider): primary 100 - w, canary w."""
    return [h.traffic_split(SMI_NS, "podinfo", "podinfo",
                            [("podinfo-primary", 100 - w), ("podinfo-canary", w)],
                            version="v1alpha3")]


def scenario_smi_flagger(ctx):
    """Flagger-style progressive delivery: TrafficSplit v1alpha3 rewritten live with the canary
    at 10, 25, 50, then 100%. For each step, calls run back to back across the write; the
    client must follow within CHANGE_DEADLINE (the maximum-likelihood point where the canary
    share switches from the old weight to the new one; for 100%, the call after the last one
    to the primary), with no failed call, and then SPLIT_CALLS calls must fit the new weight
    (the ±SPLIT_SD binomial band; at 100% every call on the canary)."""
    p = pods("127.0.0.2", "podinfo-primary-a", "podinfo-canary-a")
    b = ctx.backends(list(p), hosts=p)
    ctx.config.write("services.yaml", smi_services(b, [
        # Flagger's apex Service selects the primary pods.
        ("podinfo", {"app": "podinfo-primary"}, ["podinfo-primary-a"]),
        ("podinfo-primary", {"app": "podinfo-primary"}, ["podinfo-primary-a"]),
        ("podinfo-canary", {"app": "podinfo"}, ["podinfo-canary-a"]),
    ]))
    ctx.config.write("split.yaml", flagger_split(0))
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(SMI_NS, "client-1")
    target = f"xds:///{h.fqdn('podinfo', SMI_NS)}"
    client.ready(target)
    expect_all(client, target, "podinfo-primary-a", n=200)
    canary = "podinfo-canary-a"
    followed, pushed, shares = {}, {}, {}
    old = 0
    for w in FLAGGER_STEPS:
        label = f"canary {old}% -> {w}%"
        stop = {"backend": canary, "streak": 300} if w == 100 else None
        client.start_run(target, max_seconds=FLAGGER_RUN, stop=stop)
        time.sleep(0.5)
        t_write = ctx.config.write("split.yaml", flagger_split(w))
        calls = client.finish_run()
        r = h.share_change(calls, t_write, canary, old / 100, w / 100)
        pre = [c for c in calls if c[0] < t_write]
        hits = sum(1 for c in pre if c[2] == canary)
        desc = (f"{len(calls)} calls; canary before the write {hits}/{len(pre)}, before the "
                f"change point {r['before'][0]}/{r['before'][1]}, after {r['after'][0]}/"
                f"{r['after'][1]}; {r['errors']} failed")
        if r["latency"] is None:
            raise E2EError(f"{label}: expected the canary share to move to {w}% within "
                           f"{CHANGE_DEADLINE}s of the write, never saw it ({desc}); route: "
                           f"{route_clusters(ctx.controller, client.node_id, 'podinfo')}")
        ctx.log(f"{label}: followed {r['latency'] * 1000:.0f} ms after the write ({desc})")
        if r["errors"]:
            raise E2EError(f"{label}: expected no failed calls across the change, got "
                           f"{r['errors']}: {[c for c in calls if c[2].startswith('ERR:')][:3]}")
        lo, hi = (0, 0) if old == 0 else h.binomial_band(len(pre), old / 100, SPLIT_SD)
        if pre and not lo <= hits <= hi:
            raise E2EError(f"{label}: before the write expected the canary at {old}% "
                           f"({lo}..{hi} of {len(pre)}), got {hits}")
        if r["latency"] > CHANGE_DEADLINE:
            raise E2EError(f"{label}: expected the client to follow within {CHANGE_DEADLINE}s, "
                           f"took {r['latency']:.3f}s ({desc})")
        if w == 100 and r["after"][1] < 300:
            raise E2EError(f"{label}: expected a run of 300 calls all on the canary after the "
                           f"change, got {r['after'][1]} ({desc})")
        rds = h.type_sync(ctx.controller.get_json("/debug/syncz"), client.node_id, "RDS")
        if not rds.get("version_sent") or rds.get("version_acked") != rds.get("version_sent"):
            raise E2EError(f"{label}: expected RDS sent and ACKed, got {rds}")
        pushed[w] = round((h.epoch(rds["last_push"]) - t_write) * 1000)
        got = client.calls(target, SPLIT_CALLS)
        if got["errors"]:
            raise E2EError(f"{label}: expected no failed calls at {w}%, got {got['errors']}")
        counts = by_service(got["counts"])
        try:
            summary = h.check_split(counts, {"podinfo-primary": 100 - w,
                                             "podinfo-canary": w}, SPLIT_SD)
        except E2EError as e:
            raise E2EError(f"{label}: {SPLIT_CALLS} calls after the change: {e}") from None
        ctx.log(f"{label}: RDS pushed {pushed[w]} ms after the write; {summary}")
        followed[w] = round(r["latency"] * 1000)
        shares[w] = counts.get("podinfo-canary", 0)
        old = w
    ctx.figures["flagger: client followed after write (ms), per canary weight"] = followed
    ctx.figures["flagger: RDS pushed after write (ms)"] = pushed
    ctx.figures[f"flagger: canary calls of {SPLIT_CALLS}"] = shares


BETA_COOKIE = r"^(.*;\s*)?version=beta(;.*)?$"


def scenario_smi_beta_header(ctx):
    """HTTPRouteGroup v1alpha4 with a header match on the `cookie` metadata (the regex of the
    SMI example: `version=beta` anywhere in the Cookie header) + TrafficSplit v1alpha4 with
    `matches` (web-v1 0, web-v2 100): calls whose cookie matches go only to web-v2; every other
    call (no cookie, or a cookie that does not match) goes to the root Service `web`, whose
    endpoints are the v1 pods only. gRPC sends `cookie` as ordinary metadata, and its xDS
    header matcher sees it."""
    p = pods("127.0.0.3", "web-v1-a", "web-v2-a")
    b = ctx.backends(list(p), hosts=p)
    ctx.config.write("services.yaml", smi_services(b, [
        ("web", {"app": "web", "version": "v1"}, ["web-v1-a"]),
        ("web-v1", {"app": "web", "version": "v1"}, ["web-v1-a"]),
        ("web-v2", {"app": "web", "version": "v2"}, ["web-v2-a"]),
    ]))
    ctx.config.write("split.yaml", [
        h.http_route_group(SMI_NS, "beta-users", [
            {"name": "beta-cookie", "headers": [{"cookie": BETA_COOKIE}]},
        ]),
        h.traffic_split(SMI_NS, "web-beta", "web", [("web-v1", 0), ("web-v2", 100)],
                        version="v1alpha4", matches=["beta-users"]),
    ])
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(SMI_NS, "client-1")
    target = f"xds:///{h.fqdn('web', SMI_NS)}"
    client.ready(target)
    cases = [
        ((), "web-v1-a"),
        ((("cookie", "version=beta"),), "web-v2-a"),
        ((("cookie", "session=abc; version=beta; theme=dark"),), "web-v2-a"),
        ((("cookie", "session=abc;version=beta"),), "web-v2-a"),
        ((("cookie", "version=betamax"),), "web-v1-a"),
        ((("cookie", "xversion=beta"),), "web-v1-a"),
        ((("cookie", "version=alpha"),), "web-v1-a"),
        ((("x-version", "beta"),), "web-v1-a"),
    ]
    cases = [(CALL, m, w) for m, w in cases] + [
        (OTHER, (), "web-v1-a"),
        (OTHER, (("cookie", "version=beta"),), "web-v2-a"),
    ]
    for method, metadata, want in cases:
        try:
            got = expect_all(client, target, want, n=20, method=method, metadata=metadata)
        except E2EError as e:
            raise E2EError(f"{e}; route in config_dump: "
                           f"{route_clusters(ctx.controller, client.node_id, 'web')}") from None
        seen = got["responses"][want]["metadata"]
        for k, v in metadata:
            if seen.get(k) != v:
                raise E2EError(f"{want} should have seen {k}: {v!r}, saw {seen}")
        ctx.log(f"{method:26} {str(dict(metadata)):50} -> {want}")
    for metadata, want in ((("cookie", "version=beta"),), "web-v2-a"), ((), "web-v1-a"):
        expect_all(client, target, want, n=SPLIT_CALLS, metadata=metadata)
        ctx.log(f"{SPLIT_CALLS} calls {dict(metadata) or 'without cookie'}: all on {want}")
    # gRPC joins repeated metadata with "," for header matching (not "; " as browsers join
    # cookies), so a cookie sent as two entries does not match this regex. Recorded, not
    # checked: that is gRPC's behaviour, not Lanyard's.
    two = client.calls(target, 20, metadata=(("cookie", "session=abc"), ("cookie", "version=beta")))
    ctx.log(f"cookie as two metadata entries (session=abc, version=beta) -> {two['counts']}")
    ctx.figures["beta cases"] = len(cases)
    ctx.figures["cookie as two metadata entries"] = two["counts"]


def scenario_smi_grpc_methods(ctx):
    """HTTPRouteGroup v1alpha4 `pathRegex` and `methods` matches on gRPC calls (TrafficSplit
    v1alpha4, api-v2 100, root `api` = the v1 pod). Every gRPC call is a POST: proxyless
    clients get `methods: [POST]` as no method match at all, and a route allowing only other
    methods not at all (Envoy keeps the `:method` matcher). So `/lanyard.e2e.Echo/Call` with
    `methods: [POST]` goes to api-v2, and `/lanyard.e2e.Echo/Other` with `methods: [GET]`
    stays on the root."""
    p = pods("127.0.0.5", "api-v1-a", "api-v2-a")
    b = ctx.backends(list(p), hosts=p)
    ctx.config.write("services.yaml", smi_services(b, [
        ("api", {"app": "api", "version": "v1"}, ["api-v1-a"]),
        ("api-v1", {"app": "api", "version": "v1"}, ["api-v1-a"]),
        ("api-v2", {"app": "api", "version": "v2"}, ["api-v2-a"]),
    ]))
    ctx.config.write("split.yaml", [
        h.http_route_group(SMI_NS, "grpc-calls", [
            {"name": "other-get", "pathRegex": r"^/lanyard\.e2e\.Echo/Other$",
             "methods": ["GET"]},
            {"name": "call-post", "pathRegex": r"^/lanyard\.e2e\.Echo/Call$",
             "methods": ["POST"]},
        ]),
        h.traffic_split(SMI_NS, "api-paths", "api", [("api-v2", 100)],
                        version="v1alpha4", matches=["grpc-calls"]),
    ])
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(SMI_NS, "client-1")
    target = f"xds:///{h.fqdn('api', SMI_NS)}"
    client.ready(target)
    cases = [
        (CALL, "api-v2-a", "pathRegex + methods [POST]: every gRPC call is a POST"),
        (OTHER, "api-v1-a", "pathRegex + methods [GET]: never a gRPC call"),
    ]
    wrong = []
    for method, want, what in cases:
        got = client.calls(target, 20, method=method)
        ok = not got["errors"] and set(got["counts"]) == {want}
        ctx.log(f"{method:26} ({what}) -> {got['counts']} {got['errors'] or ''}"
                f"{'' if ok else f'  expected all on {want}'}")
        if not ok:
            wrong.append(f"{method} ({what}): expected all 20 on {want}, got {got['counts']} "
                         f"errors {got['errors']}")
    if wrong:
        raise E2EError("; ".join(wrong) + "; route in config_dump: "
                       f"{route_clusters(ctx.controller, client.node_id, 'api')}")


def gateway_route(kind):
    """A route on the root Service `reviews` sending everything to reviews-v1."""
    make = h.grpc_route if kind == "GRPCRoute" else h.http_route
    rule = {"backendRefs": [h.backend_ref("reviews-v1")]}
    if kind == "HTTPRoute":
        rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    return [make(SMI_NS, "reviews", [h.parent(SMI_NS, "reviews")], [rule])]


def scenario_smi_gateway_wins(ctx):
    """A Gateway API route attached to the root Service of a TrafficSplit wins: with a GRPCRoute
    (all to reviews-v1) and a TrafficSplit v1alpha3 (all to reviews-v2) on `reviews`, every
    call follows the route; deleting the route file brings the split back live (all on v2,
    within CHANGE_DEADLINE), and adding an HTTPRoute takes it away again (all on v1). The root's
    own endpoints are both pods, so ignoring both would show as a mix."""
    p = pods("127.0.0.4", "reviews-v1-a", "reviews-v2-a")
    b = ctx.backends(list(p), hosts=p)
    ctx.config.write("services.yaml", smi_services(b, [
        ("reviews", {"app": "reviews"}, ["reviews-v1-a", "reviews-v2-a"]),
        ("reviews-v1", {"app": "reviews", "version": "v1"}, ["reviews-v1-a"]),
        ("reviews-v2", {"app": "reviews", "version": "v2"}, ["reviews-v2-a"]),
    ]))
    ctx.config.write("split.yaml", [
        h.traffic_split(SMI_NS, "reviews-split", "reviews", [("reviews-v2", 100)],
                        version="v1alpha3"),
    ])
    ctx.config.write("route.yaml", gateway_route("GRPCRoute"))
    ctx.check_config()
    ctx.start_controller()
    client = ctx.client(SMI_NS, "client-1")
    target = f"xds:///{h.fqdn('reviews', SMI_NS)}"
    client.ready(target)
    try:
        expect_all(client, target, "reviews-v1-a", n=200)
    except E2EError as e:
        raise E2EError(f"GRPCRoute and TrafficSplit on reviews, expected the route to win: {e}; "
                       f"route: {route_clusters(ctx.controller, client.node_id, 'reviews')}"
                       ) from None
    ctx.log("GRPCRoute + TrafficSplit: 200 calls all on reviews-v1 (the route)")
    latencies = {}
    steps = [("route deleted", lambda: ctx.config.remove("route.yaml"),
              "reviews-v1-a", "reviews-v2-a"),
             ("HTTPRoute added", lambda: ctx.config.write("route.yaml", gateway_route("HTTPRoute")),
              "reviews-v2-a", "reviews-v1-a")]
    for label, change, old, new in steps:
        client.start_run(target, max_seconds=6.0, stop={"backend": new, "streak": 300})
        time.sleep(0.5)
        t_change = change()
        calls = client.finish_run()
        r = h.analyse_change(calls, t_change, old, new, streak=300)
        if not r["converged"]:
            raise E2EError(f"{label}: expected every call on {new} for good, got {r}; route: "
                           f"{route_clusters(ctx.controller, client.node_id, 'reviews')}")
        ctx.log(f"{label}: followed {r['latency'] * 1000:.0f} ms after the change "
                f"({len(calls)} calls; before {r['before']}, after {r['after']}, "
                f"errors {r['errors']})")
        if not r["old_seen_before"] or r["errors"]:
            raise E2EError(f"{label}: expected {old} before the change and no failed calls: {r}")
        if r["latency"] > CHANGE_DEADLINE:
            raise E2EError(f"{label}: expected the client to follow within {CHANGE_DEADLINE}s, "
                           f"took {r['latency']:.3f}s")
        expect_all(client, target, new, n=SPLIT_CALLS)
        latencies[label] = round(r["latency"] * 1000)
    ctx.figures["gateway wins: client followed after change (ms)"] = latencies


WEBHOOK_SERVICE = "lanyard-system/lanyard-webhook:443"  # the CRDs' conversion clientConfig
WEBHOOK_HOST = "lanyard-webhook.lanyard-system.svc"


def read_split(api, name, version):
    """`kubectl get trafficsplits.<version>.split.smi-spec.io NAME -o json`, parsed."""
    return json.loads(api.kubectl("get", f"trafficsplits.{version}.split.smi-spec.io", name,
                                  "-n", SMI_NS, "-o", "json"))


def split_weights(obj):
    return [b.get("weight") for b in (obj.get("spec") or {}).get("backends") or []]


def wait_smi_report(ctx, name, what, ok):
    """Polls `GET /debug/translation` until the `smi` entry of split `name` satisfies `ok`."""
    deadline = time.monotonic() + STATUS_WITHIN
    while True:
        report = ctx.controller.get_json("/debug/translation")
        entry = next((e for e in report.get("smi") or []
                      if e.get("namespace") == SMI_NS and e.get("name") == name), None)
        if entry is not None and ok(entry):
            return entry
        if time.monotonic() > deadline:
            raise E2EError(f"/debug/translation never showed {what} for {SMI_NS}/{name} within "
                           f"{STATUS_WITHIN}s; smi: {json.dumps(report.get('smi'))[:2000]}")
        time.sleep(0.1)


def split_events(api, name):
    """events.k8s.io Events in SMI_NS regarding TrafficSplit `name`."""
    events = json.loads(api.kubectl("get", "events.events.k8s.io", "-n", SMI_NS, "-o", "json"))
    return [e for e in events.get("items") or []
            if (e.get("regarding") or {}).get("kind") == "TrafficSplit"
            and (e.get("regarding") or {}).get("name") == name]


def wait_split_event(api, name, what, ok):
    """Polls until an Event regarding TrafficSplit `name` satisfies `ok`; returns it."""
    deadline = time.monotonic() + STATUS_WITHIN
    while True:
        events = split_events(api, name)
        found = next((e for e in events if ok(e)), None)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise E2EError(f"no Event regarding TrafficSplit {SMI_NS}/{name} with {what} within "
                           f"{STATUS_WITHIN}s; its events: {json.dumps(events)[:2000]}")
        time.sleep(0.1)


def scenario_smi_kubernetes(ctx):
    """SMI in Kubernetes mode with the real conversion webhook: a serving certificate for
    lanyard-webhook.lanyard-system.svc (openssl), the real `lanyard-webhook` on loopback, the
    loopback API server told where that Service listens (`--webhook-service`), Lanyard's SMI
    CRDs applied with the certificate as `caBundle`, then a TrafficSplit written with kubectl at
    v1alpha1 (quantities 900m/100m). It reads back at v1alpha4 as 9/1 (converted by the
    webhook to the smallest whole numbers with the same ratio); `lanyard-controller --kubeconfig` applies it (/debug/translation `Applied`, an
    `Applied` Event regarding the split) and the gRPC client lands 90/10 within the band; a
    v1alpha2 edit to 50/50 is followed within CHANGE_DEADLINE of `kubectl apply` returning
    (the change point of the v2 share), and lands 50/50."""
    cert, key, ca_pem = h.serving_certificate(ctx.dir, WEBHOOK_HOST)
    webhook = h.Webhook(ctx.procs, cert, key)
    ctx.log(f"lanyard-webhook on {webhook.address} (certificate for {WEBHOOK_HOST})")
    ctx.api = api = h.ApiServer(ctx.procs, webhook_services={WEBHOOK_SERVICE: webhook.address})
    ctx.log(f"loopback API server (--webhook-service {WEBHOOK_SERVICE}={webhook.address}), "
            f"kubeconfig {api.kubeconfig}")
    api.kubectl("apply", "-f", "-", input=h.smi_crds(ca_pem))
    ctx.log("kubectl apply: crds/smi/*.yaml with caBundle = the webhook's certificate")

    p = pods("127.0.0.6", "cart-v1-a", "cart-v2-a")
    b = ctx.backends(list(p), hosts=p)
    docs = smi_services(b, [
        ("cart", {"app": "cart"}, ["cart-v1-a", "cart-v2-a"]),
        ("cart-v1", {"app": "cart", "version": "v1"}, ["cart-v1-a"]),
        ("cart-v2", {"app": "cart", "version": "v2"}, ["cart-v2-a"]),
    ])
    split = lambda version, w1, w2: h.traffic_split(
        SMI_NS, "cart-canary", "cart", [("cart-v1", w1), ("cart-v2", w2)], version=version)
    ctx.config.write("smi.yaml", docs + [split("v1alpha1", "900m", "100m")])
    ctx.check_config()
    api.apply(docs)
    api.apply([split("v1alpha1", "900m", "100m")])
    v4 = read_split(api, "cart-canary", "v1alpha4")
    if v4.get("apiVersion") != "split.smi-spec.io/v1alpha4" or split_weights(v4) != [9, 1]:
        raise E2EError("written at v1alpha1 with 900m/100m, expected v1alpha4 to read integer "
                       f"weights [9, 1], got {v4.get('apiVersion')} {split_weights(v4)}")
    v1 = read_split(api, "cart-canary", "v1alpha1")
    if split_weights(v1) != ["900m", "100m"]:
        raise E2EError(f"expected v1alpha1 to read back 900m/100m, got {split_weights(v1)}")
    ctx.log("written at v1alpha1 900m/100m: kubectl get at v1alpha4 -> weights 9/1, "
            "at v1alpha1 -> 900m/100m")
    ctx.figures["v1alpha4 weights read back"] = split_weights(v4)

    ctx.start_controller(kubernetes=True)
    message = lambda w1, w2: f"{SMI_NS}/cart port {h.GRPC_PORT} split: cart-v1 {w1}%, cart-v2 {w2}%"
    entry = wait_smi_report(ctx, "cart-canary", "Applied 90/10", lambda e: e.get(
        "outcome") == "Applied" and e.get("message") == message(90, 10))
    ctx.log(f"/debug/translation: {entry['outcome']}: {entry['message']}")
    event = wait_split_event(api, "cart-canary", "reason Applied", lambda e: e.get(
        "reason") == "Applied")
    if event.get("type") != "Normal" or message(90, 10) not in (event.get("note") or ""):
        raise E2EError(f"expected a Normal Applied Event noting {message(90, 10)!r}: {event}")
    ctx.log(f"Event {event.get('type')}/{event.get('reason')} regarding "
            f"{event['regarding'].get('apiVersion')} TrafficSplit: {event.get('note')}")

    client = ctx.client(SMI_NS, "client-1")
    target = f"xds:///{h.fqdn('cart', SMI_NS)}"
    client.ready(target)
    got = client.calls(target, SPLIT_CALLS)
    if got["errors"]:
        raise E2EError(f"90/10: expected no failed calls, got {got['errors']}")
    try:
        summary = h.check_split(by_service(got["counts"]), {"cart-v1": 90, "cart-v2": 10},
                                SPLIT_SD)
    except E2EError as e:
        raise E2EError(f"90/10 {target}: {e}; route in config_dump: "
                       f"{route_clusters(ctx.controller, client.node_id, 'cart')}") from None
    ctx.log(f"v1alpha1 900m/100m {target}: {summary}")
    ctx.figures["90/10 per pod"] = got["counts"]

    # The change, written at v1alpha2 while calls run back to back.
    canary = "cart-v2-a"
    client.start_run(target, max_seconds=0.5 + CHANGE_DEADLINE + 3.0)
    time.sleep(0.5)
    t_start = time.time()
    api.apply([split("v1alpha2", 50, 50)])
    t_applied = time.time()
    calls = client.finish_run()
    r = h.share_change(calls, t_start, canary, 0.10, 0.50)
    pre = [c for c in calls if c[0] < t_start]
    hits = sum(1 for c in pre if c[2] == canary)
    desc = (f"{len(calls)} calls; cart-v2 before kubectl {hits}/{len(pre)}, before the change "
            f"point {r['before'][0]}/{r['before'][1]}, after {r['after'][0]}/{r['after'][1]}; "
            f"{r['errors']} failed; kubectl apply took {(t_applied - t_start) * 1000:.0f} ms")
    if r["latency"] is None:
        raise E2EError(f"90/10 -> 50/50: the cart-v2 share never moved to 50% ({desc}); route: "
                       f"{route_clusters(ctx.controller, client.node_id, 'cart')}")
    followed = r["latency"] - (t_applied - t_start)
    ctx.log(f"90/10 -> 50/50 (v1alpha2): followed {followed * 1000:.0f} ms after kubectl apply "
            f"returned ({r['latency'] * 1000:.0f} ms after it started; {desc})")
    if r["errors"]:
        raise E2EError(f"90/10 -> 50/50: expected no failed calls across the change ({desc})")
    lo, hi = h.binomial_band(len(pre), 0.10, SPLIT_SD)
    if not lo <= hits <= hi:
        raise E2EError(f"before the change expected cart-v2 at 10% ({lo}..{hi}), got {desc}")
    if followed > CHANGE_DEADLINE:
        raise E2EError(f"90/10 -> 50/50: expected the client to follow within "
                       f"{CHANGE_DEADLINE}s of kubectl apply, took {followed:.3f}s ({desc})")
    got = client.calls(target, SPLIT_CALLS)
    if got["errors"]:
        raise E2EError(f"50/50: expected no failed calls, got {got['errors']}")
    summary = h.check_split(by_service(got["counts"]), {"cart-v1": 50, "cart-v2": 50}, SPLIT_SD)
    ctx.log(f"v1alpha2 50/50: {summary}")
    ctx.figures["50/50 per pod"] = got["counts"]
    ctx.figures["90/10 -> 50/50: client followed after kubectl apply returned (ms)"] = round(
        followed * 1000)
    ctx.figures["90/10 -> 50/50: kubectl apply took (ms)"] = round((t_applied - t_start) * 1000)

    v4 = read_split(api, "cart-canary", "v1alpha4")
    if split_weights(v4) != [50, 50]:
        raise E2EError(f"written at v1alpha2 50/50, v1alpha4 reads {split_weights(v4)}")
    entry = wait_smi_report(ctx, "cart-canary", "Applied 50/50", lambda e: e.get(
        "outcome") == "Applied" and e.get("message") == message(50, 50))
    ctx.log(f"/debug/translation: {entry['outcome']}: {entry['message']}")
    event = wait_split_event(api, "cart-canary", "reason Applied noting 50/50", lambda e: e.get(
        "reason") == "Applied" and message(50, 50) in (e.get("note") or ""))
    ctx.log(f"Event {event.get('type')}/{event.get('reason')}: {event.get('note')}")

    # The conversions were the webhook's: without it, reading at another version fails.
    webhook.child.stop()
    try:
        read_split(api, "cart-canary", "v1alpha1")
    except E2EError as e:
        if "conversion webhook" not in str(e):
            raise
        ctx.log("webhook stopped: kubectl get at v1alpha1 fails (conversion webhook "
                "unreachable)")
    else:
        raise E2EError("with lanyard-webhook stopped, reading at v1alpha1 still worked: who "
                       "converted?")


# --------------------------------------------------------------------------------------------
# 8. Clients that start after each change
#
# A client that was running keeps its last good configuration when it NACKs a change; a
# client that starts after the change has none, so a NACKed route means every call fails. Each
# scenario below starts one controller on Services alone, then makes one change after the
# other (one file write each, so one snapshot each); after each change it waits for the
# controller to publish it, starts a fresh client process (a new xDS identity), and checks that
# the client becomes ready, that its calls land where the routes say, and that /debug/syncz
# shows no NACK (and every version sent acknowledged) for it.

LATE_CALLS = 20  # calls per case: a wrong route shows on the first call
LATE_SPLIT_CALLS = 400  # calls per weighted case (binomial band as in SPLIT_SD)
ACK_WITHIN = 3.0  # seconds for every version sent to a fresh client to be acknowledged
READY_WITHIN = 5.0  # seconds for a fresh client's first call to succeed (it takes ~0.15 s)


def late_change(ctx, label, docs, clients, clean=True):
    """Writes `docs` as routes.yaml (one write: one snapshot), waits for the controller to
    publish it, checks it translates cleanly, then for each (namespace, cases) in `clients`
    starts a fresh client in that namespace and checks `cases`: [(target, method, metadata,
    want)], `want` a backend name (every call lands there), {backend: weight} (the calls
    follow the weights), or `ERR:<CODE>` (every call fails with that status). The first case
    of each target must succeed: it is how the client proves ready. `clean`: the change must
    translate without warnings (`False` for a change that is meant to have some). Returns
    {pod: {case: result}} for the figures."""
    before = ctx.controller.generation()
    ctx.config.write("routes.yaml", docs)
    published = ctx.controller.wait_generation_after(before)
    if clean:
        ctx.check_config()
    seen = {}
    for i, (ns, cases) in enumerate(clients):
        pod = f"late-{label}-{i}"
        client = ctx.client(ns, pod)
        ready = set()
        results = {}
        try:
            for target, method, metadata, want, *n in cases:
                if target not in ready:
                    try:
                        doc = client.ready(target, method=method, metadata=metadata,
                                           timeout=READY_WITHIN)
                        results[f"ready {target} (ms)"] = round(doc["elapsed"] * 1000)
                    except E2EError as e:
                        nacked = h.nacks(ctx.controller.get_json("/debug/syncz"),
                                         client.node_id)
                        raise E2EError(f"{label}: a client started after the change (snapshot "
                                       f"{published}) was not ready within {READY_WITHIN}s: "
                                       f"{e}; its NACKs: {nacked}") from None
                    ready.add(target)
                results[f"{method} {dict(metadata) or ''}".strip()] = late_case(
                    ctx, label, client, target, method, metadata, want, *n)
            check_acked(ctx, label, client)
        finally:
            client.stop()
        seen[f"{ns}/{pod}"] = results
    return seen


def late_case(ctx, label, client, target, method, metadata, want, n=3):
    """One case of `late_change`; returns a short result for the figures. An `ERR:` case
    makes `n` calls with a deadline of 10 s each."""
    where = f"{label}: {client.node_id} {method} {list(metadata)} on {target}"
    if isinstance(want, dict):
        got = client.calls(target, LATE_SPLIT_CALLS, method=method, metadata=metadata)
        # A weight keyed `ERR:<CODE>` is the share that must fail with that status.
        failing = [k for k in want if k.startswith("ERR:")]
        counts = dict(got["counts"])
        for error, n in got["errors"].items():
            key = next((k for k in failing if error.startswith(k)), None)
            if key is None:
                raise E2EError(f"{where}: expected no failed calls but {failing}, got "
                               f"{got['errors']}")
            counts[key] = counts.get(key, 0) + n
        try:
            summary = h.check_split(counts, want, SPLIT_SD)
        except E2EError as e:
            raise E2EError(f"{where}: {e}") from None
        ctx.log(f"{label:10} {client.namespace:6} {method:32} {str(dict(metadata)):26} {summary}")
        # What each backend saw of the request headers a rule or backend filter set (gRPC
        # applies no header modifier: recorded, not checked).
        seen = {b: sorted(k for k in r["metadata"] if k.startswith("x-"))
                for b, r in got["responses"].items()}
        return {"counts": counts, "x- headers seen": seen}
    if want.startswith("ERR:"):
        t0 = time.monotonic()
        got = client.calls(target, n, method=method, metadata=metadata, call_timeout=10)
        took = (time.monotonic() - t0) / n
        if got["counts"] or not all(e.startswith(want) for e in got["errors"]):
            raise E2EError(f"{where}: expected every call to fail {want[4:]}, got "
                           f"{got['counts']} errors {got['errors']}")
        ctx.log(f"{label:10} {client.namespace:6} {method:32} {str(dict(metadata)):26} -> "
                f"{list(got['errors'])} after {took * 1000:.0f} ms")
        return {"errors": list(got["errors"]), "ms per call": round(took * 1000)}
    got = expect_all(client, target, want, n=LATE_CALLS, method=method, metadata=metadata)
    answer = got["responses"][want]
    if answer["method"] != method:
        raise E2EError(f"{where}: {want} saw method {answer['method']}")
    ctx.log(f"{label:10} {client.namespace:6} {method:32} {str(dict(metadata)):26} -> {want}")
    return want


def check_acked(ctx, label, client):
    """No NACK from `client` on /debug/syncz, and every version sent to it acknowledged within
    ACK_WITHIN (a NACK fails at once, with the client's message)."""
    deadline = time.monotonic() + ACK_WITHIN
    while True:
        syncz = ctx.controller.get_json("/debug/syncz")
        nacked = h.nacks(syncz, client.node_id)
        if nacked:
            raise E2EError(f"{label}: {client.node_id} NACKed: " + "; ".join(
                f"{ty} version {n.get('version')}: {n.get('message')}" for ty, n in nacked))
        pending = h.unacked(syncz, client.node_id)
        if not pending and h.proxy_sync(syncz, client.node_id):
            return
        if time.monotonic() > deadline:
            raise E2EError(f"{label}: {client.node_id}: versions sent but not acknowledged "
                           f"within {ACK_WITHIN}s: {pending}")
        time.sleep(0.05)


def path(type_, value):
    return {"path": {"type": type_, "value": value}}


def header(name, value, type_="Exact"):
    return {"name": name, "value": value, "type": type_}


LATE_HTTP = ["lh-grpc", "lh-http", "la-exact", "la-prefix", "la-regex", "la-default", "la-hdr",
             "la-hdr-re", "la-query", "la-get", "la-post", "la-w1", "la-w2", "la-mirror",
             "la-slow", "la-retry", "la-consumer"]
ADMIN = "/lanyard.e2e.Admin/Call"


def scenario_late_client_http(ctx):
    """HTTPRoutes seen only by clients that start after each change, on two parents at once:
    a port that declares gRPC (`appProtocol: grpc`) and a port named `http` with no
    appProtocol. Changes: path matches (Exact, PathPrefix, RegularExpression); header (exact
    and regex), query and method matches; weighted backendRefs with request and response
    header modifiers (rule and backend level), a RequestMirror and CORS; timeouts (a request
    timeout gRPC enforces as its deadline, and `request: 10s, backendRequest: 0s`) and retry;
    producer and consumer routes on the `http` port."""
    b = ctx.backends(LATE_HTTP)
    docs = [h.namespace(ns) for ns in (NS, "web", "other")]
    docs += h.backend_service(NS, "lh-grpc", b["lh-grpc"])
    docs += h.backend_service(NS, "lh-http", b["lh-http"], declares="http-name")
    for name in LATE_HTTP[2:]:
        docs += h.backend_service(NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.check_config()
    ctx.start_controller()
    parents = [h.parent(NS, "lh-grpc"), h.parent(NS, "lh-http")]
    targets = [f"xds:///{h.fqdn('lh-grpc', NS)}", f"xds:///{h.fqdn('lh-http', NS)}"]
    route = lambda rules: [h.http_route(NS, "late", parents, rules)]
    default = {"matches": [path("PathPrefix", "/")], "backendRefs": [h.backend_ref("la-default")]}
    on_both = lambda cases: [(NS, [(t, *c) for t in targets for c in cases])]
    figures = {}

    figures["paths"] = late_change(ctx, "paths", route([
        {"matches": [path("Exact", OTHER)], "backendRefs": [h.backend_ref("la-exact")]},
        {"matches": [path("PathPrefix", "/lanyard.e2e.Admin")],
         "backendRefs": [h.backend_ref("la-prefix")]},
        {"matches": [path("RegularExpression", r"/lanyard\.e2e\.Re[a-z]+/.*")],
         "backendRefs": [h.backend_ref("la-regex")]},
        default,
    ]), on_both([
        (CALL, (), "la-default"),
        (OTHER, (), "la-exact"),
        (ADMIN, (), "la-prefix"),
        ("/lanyard.e2e.Administrator/Call", (), "la-default"),
        ("/lanyard.e2e.Regex/Call", (), "la-regex"),
        ("/lanyard.e2e.Re1/Call", (), "la-default"),
    ]))

    figures["headers, query, method"] = late_change(ctx, "matches", route([
        {"matches": [{"headers": [header("x-user", "jason")]}],
         "backendRefs": [h.backend_ref("la-hdr")]},
        {"matches": [{"headers": [header("x-version", "v[0-9]+", "RegularExpression")]}],
         "backendRefs": [h.backend_ref("la-hdr-re")]},
        # gRPC calls carry no query string and are all POSTs: these two never match one.
        {"matches": [{**path("PathPrefix", "/"),
                      "queryParams": [{"name": "q", "value": "1"}]}],
         "backendRefs": [h.backend_ref("la-query")]},
        {"matches": [{**path("PathPrefix", "/"), "method": "GET"}],
         "backendRefs": [h.backend_ref("la-get")]},
        {"matches": [{**path("Exact", OTHER), "method": "POST"}],
         "backendRefs": [h.backend_ref("la-post")]},
        default,
    ]), on_both([
        (CALL, (), "la-default"),
        (CALL, (("x-user", "jason"),), "la-hdr"),
        (CALL, (("x-user", "jasonx"),), "la-default"),
        (CALL, (("x-version", "v12"),), "la-hdr-re"),
        (CALL, (("x-version", "vx"),), "la-default"),
        (OTHER, (), "la-post"),
    ]))

    modifier = lambda kind, op, name, value: {"type": kind, kind[0].lower() + kind[1:]: {
        op: [{"name": name, "value": value}]}}
    w1 = h.backend_ref("la-w1", 1)
    w1["filters"] = [modifier("RequestHeaderModifier", "set", "x-backend", "w1")]
    figures["weights and filters"] = late_change(ctx, "weights", route([
        {"matches": [path("Exact", OTHER)],
         "filters": [modifier("RequestHeaderModifier", "add", "x-added", "yes"),
                     modifier("ResponseHeaderModifier", "set", "x-answered", "yes")],
         "backendRefs": [w1, h.backend_ref("la-w2", 3)]},
        {"matches": [path("PathPrefix", "/lanyard.e2e.Mirror")],
         "filters": [{"type": "RequestMirror", "requestMirror": {
             "backendRef": h.backend_ref("la-mirror"), "percent": 50}}],
         "backendRefs": [h.backend_ref("la-default")]},
        {"matches": [path("PathPrefix", "/lanyard.e2e.Cors")],
         "filters": [{"type": "CORS", "cors": {"allowOrigins": ["https://example.com"],
                                               "allowMethods": ["POST"]}}],
         "backendRefs": [h.backend_ref("la-default")]},
        # README does not claim URLRewrite or RequestRedirect for proxyless gRPC: here only
        # to show that a route holding them is not NACKed, and what gRPC does with them (it
        # ignores rewrites, and fails calls that match a redirect with UNAVAILABLE).
        {"matches": [path("PathPrefix", "/lanyard.e2e.Rewrite")],
         "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
             "type": "ReplacePrefixMatch", "replacePrefixMatch": "/lanyard.e2e.Echo"}}}],
         "backendRefs": [h.backend_ref("la-default")]},
        {"matches": [path("PathPrefix", "/lanyard.e2e.Redirect")],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {
             "hostname": "example.com", "statusCode": 301}}]},
        default,
    ]), on_both([
        (CALL, (), "la-default"),
        (OTHER, (), {"la-w1": 1, "la-w2": 3}),
        ("/lanyard.e2e.Mirror/Call", (), "la-default"),
        ("/lanyard.e2e.Cors/Call", (), "la-default"),
        ("/lanyard.e2e.Rewrite/Call", (), "la-default"),
        ("/lanyard.e2e.Redirect/Call", (), "ERR:UNAVAILABLE: Matching route has inappropriate"),
    ]))

    slow = "/lanyard.e2e.Slow/Call"
    retry = "/lanyard.e2e.Retry/Call"
    # grpcio (1.85.1) fires a service-config timeout 1 to 2 s early (measured: 3s fires after
    # 1.1-1.5 s, 4s after ~2.7 s; 300ms and 1.5s fail every call at once), with or without xDS:
    # a plain `grpc.service_config` of {"timeout": "3s"} does the same. Lanyard's route is
    # right (max_stream_duration, which gRPC reads: its xds_resolver trace shows
    # max_stream_duration=4000ms). 4s leaves a fast call at least 2 s, and a call the backend
    # holds for 4.5 s fails DEADLINE_EXCEEDED (without the route timeout it would pass).
    figures["timeouts and retry"] = late_change(ctx, "timeouts", route([
        {"matches": [path("Exact", slow)], "timeouts": {"request": "4s"},
         "backendRefs": [h.backend_ref("la-slow")]},
        {"matches": [path("Exact", retry)],
         "retry": {"attempts": 2, "codes": [503], "backoff": "10ms"},
         "timeouts": {"backendRequest": "2s"},
         "backendRefs": [h.backend_ref("la-retry")]},
        # Zero attempts: no retry policy at all (gRPC refuses num_retries 0).
        {"matches": [path("Exact", "/lanyard.e2e.NoRetry/Call")], "retry": {"attempts": 0},
         "backendRefs": [h.backend_ref("la-retry")]},
        {**default, "timeouts": {"request": "10s", "backendRequest": "0s"}},
    ]), [(NS, [(t, *c) for t in targets for c in [
        (CALL, (), "la-default"),
        (slow, (), "la-slow"),
        (retry, (), "la-retry"),
        ("/lanyard.e2e.NoRetry/Call", (), "la-retry"),
    ]] + [
        # gRPC reads the route's max_stream_duration as the call's deadline (4s, shorter than
        # the client's own 10s). One call, on one port: it takes up to 4s.
        (targets[0], slow, (("x-sleep-ms", "4500"),), "ERR:DEADLINE_EXCEEDED", 1),
    ])])
    # gRPC retries a call the backend fails once with UNAVAILABLE: GEP-1731 codes are HTTP
    # status codes, and gRPC retries only on the gRPC statuses retry_on names, so Lanyard adds
    # `unavailable` for 429/502/503/504 (which gRPC clients read as UNAVAILABLE).
    client = ctx.client(NS, "late-retry")
    try:
        client.ready(targets[0], method=retry)
        outcome = {}
        for i in range(4):
            got = client.calls(targets[0], 1, method=retry,
                               metadata=(("x-fail-first", f"late-retry-{i}:1"),))
            for k, v in list(got["counts"].items()) + list(got["errors"].items()):
                outcome[k] = outcome.get(k, 0) + v
        check_acked(ctx, "retry", client)
    finally:
        client.stop()
    ctx.log(f"retry attempts 2 codes [503]: calls failed once by the backend -> {outcome}")
    if outcome != {"la-retry": 4}:
        raise E2EError(f"retry attempts 2 codes [503]: the 4 calls the backend failed once "
                       f"should all succeed on a retry, got {outcome}")
    figures["retry [503]: calls the backend fails once"] = outcome

    http_target = targets[1]
    consumer_grant = h.reference_grant(NS, "web-routes", "HTTPRoute", "web")
    figures["producer and consumer"] = late_change(ctx, "consumer", [
        h.http_route(NS, "late", [h.parent(NS, "lh-http")], [default]),
        h.http_route("web", "late-web", [h.parent(NS, "lh-http", namespace_=NS)], [
            {"matches": [path("PathPrefix", "/lanyard.e2e.Echo")],
             "backendRefs": [h.backend_ref("la-consumer", ns=NS)]},
        ]),
        consumer_grant,
    ], [
        ("web", [(http_target, CALL, (), "la-consumer"), (http_target, OTHER, (), "la-consumer"),
                 # The consumer route replaces the producer's for web: nothing else matches,
                 # and gRPC fails a call no route matches with UNAVAILABLE.
                 (http_target, ADMIN, (), "ERR:UNAVAILABLE")]),
        ("other", [(http_target, CALL, (), "la-default"), (http_target, ADMIN, (), "la-default")]),
        (NS, [(http_target, CALL, (), "la-default")]),
    ])
    ctx.figures["late clients"] = figures


LATE_GRPC = ["lg", "lg-other", "lg-admin", "lg-re", "lg-gold", "lg-plat", "lg-default",
             "lg-w1", "lg-w2", "lg-none", "lg-consumer"]
PING = "/lanyard.e2e.Echo/Ping"


def scenario_late_client_grpc(ctx):
    """GRPCRoutes seen only by clients that start after each change: service/method matches
    (exact, and regex on service and on method), header matches (exact and regex); weights,
    with backends whose port declares no protocol; producer and consumer routes."""
    b = ctx.backends(LATE_GRPC)
    docs = [h.namespace(ns) for ns in (NS, "web")]
    for name in LATE_GRPC:
        declares = "nothing" if name in ("lg-w1", "lg-none") else "grpc"
        docs += h.backend_service(NS, name, b[name], declares=declares)
    ctx.config.write("services.yaml", docs)
    ctx.check_config()
    ctx.start_controller()
    target = f"xds:///{h.fqdn('lg', NS)}"
    route = lambda rules: h.grpc_route(NS, "late", [h.parent(NS, "lg")], rules)
    method = lambda **m: {"method": m}
    figures = {}

    figures["methods and headers"] = late_change(ctx, "methods", [route([
        {"matches": [method(service="lanyard.e2e.Echo", method="Other")],
         "backendRefs": [h.backend_ref("lg-other")]},
        {"matches": [method(type="RegularExpression", service=r"lanyard\.e2e\.Adm.*")],
         "backendRefs": [h.backend_ref("lg-admin")]},
        {"matches": [method(type="RegularExpression", service=r"lanyard\.e2e\.Echo",
                            method="Ca.+")],
         "backendRefs": [h.backend_ref("lg-re")]},
        {"matches": [{"headers": [header("x-tier", "gold")]}],
         "backendRefs": [h.backend_ref("lg-gold")]},
        {"matches": [{"headers": [header("x-tier", "pl.*", "RegularExpression")]}],
         "backendRefs": [h.backend_ref("lg-plat")]},
        {"backendRefs": [h.backend_ref("lg-default")]},
    ])], [(NS, [
        (target, PING, (), "lg-default"),
        (target, CALL, (), "lg-re"),
        (target, OTHER, (), "lg-other"),
        (target, ADMIN, (), "lg-admin"),
        (target, PING, (("x-tier", "gold"),), "lg-gold"),
        (target, PING, (("x-tier", "platinum"),), "lg-plat"),
        (target, PING, (("x-tier", "bronze"),), "lg-default"),
    ])])

    figures["weights"] = late_change(ctx, "weights", [route([
        {"matches": [method(service="lanyard.e2e.Echo", method="Other")],
         "backendRefs": [h.backend_ref("lg-none")]},
        {"backendRefs": [h.backend_ref("lg-w1", 1), h.backend_ref("lg-w2", 1)]},
    ])], [(NS, [
        (target, OTHER, (), "lg-none"),
        (target, CALL, (), {"lg-w1": 1, "lg-w2": 1}),
    ])])

    figures["producer and consumer"] = late_change(ctx, "consumer", [
        route([{"backendRefs": [h.backend_ref("lg-default")]}]),
        h.grpc_route("web", "late-web", [h.parent(NS, "lg", namespace_=NS)], [
            {"matches": [method(service="lanyard.e2e.Echo")],
             "backendRefs": [h.backend_ref("lg-consumer", ns=NS)]},
        ]),
        h.reference_grant(NS, "web-routes", "GRPCRoute", "web"),
    ], [
        ("web", [(target, CALL, (), "lg-consumer"), (target, ADMIN, (), "ERR:UNAVAILABLE")]),
        (NS, [(target, CALL, (), "lg-default"), (target, ADMIN, (), "lg-default")]),
    ])

    # A backend that does not exist keeps its share, which fails UNAVAILABLE (GRPCRoute spec).
    # Proxyless clients get INVALID_BACKEND_CLUSTER as a cluster with no endpoints: without
    # it, gRPC learns that a CDS resource it never received does not exist only from its
    # does-not-exist timer (15 s; gRPC: src/core/xds/xds_client/xds_client.cc), and until then
    # a client that starts after this change could make no call to any route of the Service
    # (measured before the fix: ready after 15.1 s).
    figures["missing backend"] = late_change(ctx, "missing", [route([
        {"matches": [method(service="lanyard.e2e.Echo", method="Other")],
         "backendRefs": [h.backend_ref("lg-none")]},
        {"backendRefs": [h.backend_ref("lg-w1", 1), h.backend_ref("lg-missing", 1)]},
    ])], [(NS, [
        (target, OTHER, (), "lg-none"),
        (target, CALL, (), {"lg-w1": 1, "ERR:UNAVAILABLE": 1}),
    ])], clean=False)
    ctx.figures["late clients"] = figures


LATE_SMI = ["ls", "ls-v1", "ls-v2"]


def scenario_late_client_smi(ctx):
    """SMI seen only by clients that start after each change, on a root Service whose port
    declares no protocol: TrafficSplit v1alpha1 (quantity weights), v1alpha2, v1alpha3 with
    HTTPRouteGroups v1alpha1 (pathRegex, methods) and v1alpha2 (headers), v1alpha4 with
    HTTPRouteGroups v1alpha3 (pathRegex) and v1alpha4 (header regex). Calls that match no
    group go to the root's own endpoints."""
    b = ctx.backends(LATE_SMI)
    docs = [h.namespace(SMI_NS)]
    docs += h.backend_service(SMI_NS, "ls", b["ls"], declares="nothing")
    for name in LATE_SMI[1:]:
        docs += h.backend_service(SMI_NS, name, b[name])
    ctx.config.write("services.yaml", docs)
    ctx.check_config()
    ctx.start_controller()
    target = f"xds:///{h.fqdn('ls', SMI_NS)}"
    split = lambda version, weights, matches=(): h.traffic_split(
        SMI_NS, "late", "ls", weights, version=version, matches=matches)
    group = lambda version, name, matches: h.http_route_group(SMI_NS, name, matches,
                                                              version=version)
    figures = {}

    figures["v1alpha1"] = late_change(ctx, "v1alpha1", [
        split("v1alpha1", [("ls-v1", "250m"), ("ls-v2", "750m")]),
    ], [(SMI_NS, [(target, CALL, (), {"ls-v1": 1, "ls-v2": 3})])])

    figures["v1alpha2"] = late_change(ctx, "v1alpha2", [
        split("v1alpha2", [("ls-v1", 0), ("ls-v2", 100)]),
    ], [(SMI_NS, [(target, CALL, (), "ls-v2"), (target, OTHER, (), "ls-v2")])])

    figures["v1alpha3"] = late_change(ctx, "v1alpha3", [
        group("v1alpha1", "other-post", [
            {"name": "other", "pathRegex": r"^/lanyard\.e2e\.Echo/Other$", "methods": ["POST"]},
        ]),
        group("v1alpha2", "beta", [{"name": "beta", "headers": [{"x-beta": "yes"}]}]),
        split("v1alpha3", [("ls-v1", 100)], matches=["other-post", "beta"]),
    ], [(SMI_NS, [
        (target, CALL, (), "ls"),
        (target, OTHER, (), "ls-v1"),
        (target, CALL, (("x-beta", "yes"),), "ls-v1"),
        (target, CALL, (("x-beta", "no"),), "ls"),
    ])])

    figures["v1alpha4"] = late_change(ctx, "v1alpha4", [
        group("v1alpha3", "admin", [{"name": "admin", "pathRegex": r"/lanyard\.e2e\.Adm.*"}]),
        group("v1alpha4", "canary", [
            {"name": "canary", "headers": [{"x-canary": "^(yes|true)$"}]},
        ]),
        split("v1alpha4", [("ls-v1", 1), ("ls-v2", 1)], matches=["admin", "canary"]),
    ], [(SMI_NS, [
        (target, CALL, (), "ls"),
        (target, ADMIN, (), {"ls-v1": 1, "ls-v2": 1}),
        (target, CALL, (("x-canary", "true"),), {"ls-v1": 1, "ls-v2": 1}),
        (target, CALL, (("x-canary", "truest"),), "ls"),
    ])])
    ctx.figures["late clients"] = figures


SCENARIOS = [
    ("weighted", scenario_weighted),
    ("matching", scenario_matching),
    ("http_port_late_client", scenario_http_port_late_client),
    ("live_change", scenario_live_change),
    ("nack", scenario_nack),
    ("consumer_producer", scenario_consumer_producer),
    ("kubernetes", scenario_kubernetes),
    ("kubernetes_nack", scenario_kubernetes_nack),
    ("smi_split", scenario_smi_split),
    ("smi_flagger", scenario_smi_flagger),
    ("smi_beta_header", scenario_smi_beta_header),
    ("smi_grpc_methods", scenario_smi_grpc_methods),
    ("smi_gateway_wins", scenario_smi_gateway_wins),
    ("smi_kubernetes", scenario_smi_kubernetes),
    ("late_client_http", scenario_late_client_http),
    ("late_client_grpc", scenario_late_client_grpc),
    ("late_client_smi", scenario_late_client_smi),
]


# --------------------------------------------------------------------------------------------


class Timeout(E2EError):
    pass


def _alarm(signum, frame):
    raise Timeout("scenario time limit reached")


def _terminate(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main():
    parser = argparse.ArgumentParser(description="Lanyard gRPC xDS end-to-end tests")
    parser.add_argument("-k", dest="only", action="append",
                        help="run scenarios whose name contains this (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--work-dir", help="where config dirs and logs go (default: a temp dir)")
    parser.add_argument("--scenario-timeout", type=int, default=90)
    args = parser.parse_args()

    selected = [(n, f) for n, f in SCENARIOS
                if not args.only or any(k in n for k in args.only)]
    if not selected:
        print(f"no scenario matches {args.only}; have {[n for n, _ in SCENARIOS]}")
        return 2
    try:
        print(f"controller: {h.controller_path()}")
    except E2EError as e:
        print(f"error: {e}")
        return 2
    import grpc  # noqa: F401 - fail early, and say which interpreter lacks it
    print(f"python {sys.version.split()[0]} ({sys.executable}), grpcio {grpc.__version__}")

    work_root = args.work_dir or tempfile.mkdtemp(prefix="lanyard-e2e-")
    os.makedirs(work_root, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _terminate)
    results, figures = [], {}
    suite_start = time.monotonic()
    for name, fn in selected:
        print(f"--- {name}", flush=True)
        ctx = Context(name, work_root)
        start = time.monotonic()
        signal.alarm(args.scenario_timeout)
        ok = False
        try:
            fn(ctx)
            ok = True
        except KeyboardInterrupt:
            ctx.procs.kill_all()
            raise
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            signal.alarm(0)
            print(f"    FAILED: {e}")
            if not isinstance(e, E2EError):
                traceback.print_exc()
            print(ctx.failure_report())
        finally:
            signal.alarm(0)
            ctx.procs.kill_all()
        took = time.monotonic() - start
        print(f"{'PASS' if ok else 'FAIL'} {name} ({took:.1f}s)", flush=True)
        results.append((name, ok))
        if ctx.figures:
            figures[name] = ctx.figures

    print(f"--- figures\n{json.dumps(figures, indent=2, default=str)}")
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    keep = args.keep or failed or args.work_dir
    print(f"work dir: {work_root}" + (" (kept: config dirs, bootstraps, logs)" if keep
                                       else " (removed)"))
    if not keep:
        shutil.rmtree(work_root, ignore_errors=True)
    print(f"suite took {time.monotonic() - suite_start:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'Ctrl-C'}); child processes stopped", flush=True)
        sys.exit(130)
