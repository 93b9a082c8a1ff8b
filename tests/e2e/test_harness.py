#!/usr/bin/env python3
"""Unit checks of the e2e harness pieces, without the xDS server:

    .venv/bin/python -m unittest tests/e2e/test_harness.py -v

The statistics and timeline checks are shown to fail on wrong data (so the scenarios can
fail); the backends and the client process are driven over plain (non-xDS) targets; the
scenario manifests go through `lanyard-controller --once` when the binary is built.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

try:
    import grpc  # noqa: F401

    HAVE_GRPC = True
except ImportError:
    HAVE_GRPC = False


class YamlTest(unittest.TestCase):
    def test_block_style_with_json_scalars(self):
        text = h.to_yaml([
            {"a": 1, "b": "x: y", "c": [{"d": True, "e": []}, "f"], "g": {}, "h": None},
            {"kubernetes.io/name": "v{1001}", "yes": 1, "a b": 2},
        ])
        self.assertEqual(
            text,
            'a: 1\nb: "x: y"\nc:\n  - d: true\n    e: []\n  - "f"\ng: {}\n'
            'h: null\n---\nkubernetes.io/name: "v{1001}"\n"yes": 1\n"a b": 2\n',
        )

    def test_nested_lists(self):
        self.assertEqual(h.to_yaml([{"a": [[1, 2], {"b": [3]}]}]),
                         'a:\n  - - 1\n    - 2\n  - b:\n      - 3\n')


class StatsTest(unittest.TestCase):
    def test_band_is_four_sd(self):
        # n=1000, p=0.8: sd = sqrt(160) = 12.65, 4 sd = 50.6
        self.assertEqual(h.binomial_band(1000, 0.8), (749, 851))
        self.assertEqual(h.binomial_band(1000, 0.3), (242, 358))

    def test_split_passes_on_the_weights(self):
        h.check_split({"a": 800, "b": 200}, {"a": 80, "b": 20})
        h.check_split({"a": 760, "b": 240}, {"a": 80, "b": 20})

    def test_split_fails_off_the_weights(self):
        for counts in ({"a": 700, "b": 300}, {"a": 900, "b": 100}, {"a": 1000},
                       {"a": 500, "b": 500}):
            with self.assertRaises(h.E2EError, msg=counts):
                h.check_split(counts, {"a": 80, "b": 20})

    def test_split_fails_on_an_unweighted_backend(self):
        with self.assertRaises(h.E2EError):
            h.check_split({"a": 799, "b": 200, "parent": 1}, {"a": 80, "b": 20})
        with self.assertRaises(h.E2EError):
            h.check_split({"a": 999, "b": 1}, {"a": 100, "b": 0})


def timeline(spec, start=100.0, step=0.001):
    """'AAAB' -> [[t0, t1, 'A'], ...]"""
    return [[start + i * step, start + i * step + step / 2, label]
            for i, label in enumerate(spec)]


class ChangeTest(unittest.TestCase):
    def test_converged(self):
        calls = timeline(["v1"] * 400 + ["v2"] * 300)
        r = h.analyse_change(calls, 100.2, "v1", "v2", streak=300)
        self.assertTrue(r["converged"])
        self.assertTrue(r["old_seen_before"])
        self.assertAlmostEqual(r["latency"], 0.2, places=6)
        self.assertEqual(r["before"], {"v1": 200})
        self.assertEqual(r["after"], {"v1": 200, "v2": 300})

    def test_not_converged_when_old_comes_back(self):
        calls = timeline(["v1"] * 100 + ["v2"] * 200 + ["v1"] + ["v2"] * 50)
        r = h.analyse_change(calls, 100.05, "v1", "v2", streak=100)
        self.assertFalse(r["converged"])

    def test_errors_count_and_block_convergence(self):
        calls = timeline(["v1"] * 100 + ["ERR:UNAVAILABLE: x"] + ["v2"] * 10)
        r = h.analyse_change(calls, 100.05, "v1", "v2", streak=100)
        self.assertEqual(r["errors"], 1)
        self.assertFalse(r["converged"])

    def test_already_new_before_the_change_is_flagged(self):
        calls = timeline(["v2"] * 500)
        r = h.analyse_change(calls, 100.2, "v1", "v2", streak=100)
        self.assertFalse(r["old_seen_before"])
        self.assertLess(r["latency"], 0)


class ParseTest(unittest.TestCase):
    def test_listen_addresses(self):
        lines = [
            "2026-01-01T00:00:00Z  INFO lanyard: loaded 3 objects",
            "\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m lanyard_xds: xds listening on 127.0.0.1:41235",
            '2026 INFO lanyard: debug listening on "127.0.0.1:41236"',
        ]
        self.assertEqual(h.parse_listen_addresses(lines),
                         {"xds": "127.0.0.1:41235", "debug": "127.0.0.1:41236"})
        self.assertEqual(h.parse_listen_addresses(["xds listening on [::1]:5"]),
                         {"xds": "[::1]:5"})

    def test_prometheus(self):
        text = (
            "# HELP lanyard_xds_nacks_total NACKs\n"
            "# TYPE lanyard_xds_nacks_total counter\n"
            'lanyard_xds_nacks_total{type="type.googleapis.com/envoy.config.route.v3.'
            'RouteConfiguration"} 2\n'
            'lanyard_xds_nacks_total{type="type.googleapis.com/envoy.config.cluster.v3.Cluster"} 1\n'
            "lanyard_xds_connected_proxies 3\n"
            'lanyard_push_seconds_bucket{le="0.1"} 4\n'
        )
        samples = h.parse_prometheus(text)
        self.assertEqual(len(samples), 4)
        self.assertEqual(h.metric_sum(samples, "nack"), 3)
        self.assertEqual(h.metric_sum(samples, "nack", type="RouteConfiguration"), 2)
        self.assertEqual(h.metric_sum(samples, "push"), 0)  # histogram parts skipped

    def test_epoch(self):
        self.assertEqual(h.epoch("1970-01-01T00:00:00.000Z"), 0.0)
        self.assertAlmostEqual(h.epoch("2024-02-29T12:34:56.789Z"), 1709210096.789, places=3)

    def test_proxy_sync_takes_the_newest_stream(self):
        syncz = {"snapshot_generation": 3, "proxies": [
            {"stream": 1, "node_id": "c1.e2e", "types": {"RDS": {"version_sent": "a"}}},
            {"stream": 4, "node_id": "c1.e2e", "types": {"RDS": {
                "version_sent": "b", "version_acked": "a",
                "last_nack": {"version": "b", "message": "invalid regex"}}}},
            {"stream": 2, "node_id": "c2.e2e", "types": {}},
        ]}
        self.assertEqual(h.proxy_sync(syncz, "c1.e2e")["stream"], 4)
        self.assertEqual(h.type_sync(syncz, "c1.e2e", "RDS")["last_nack"]["version"], "b")
        self.assertEqual(h.type_sync(syncz, "c2.e2e", "RDS"), {})
        self.assertIsNone(h.proxy_sync(syncz, "c3.e2e"))

    def test_nacks_and_unacked_versions_on_any_stream(self):
        syncz = {"proxies": [
            {"stream": 1, "node_id": "c1.e2e", "types": {
                "LDS": {"version_sent": "l", "version_acked": "l"},
                "RDS": {"version_sent": "a", "version_acked": "x",
                        "last_nack": {"version": "a", "message": "invalid path specifier"}}}},
            {"stream": 4, "node_id": "c1.e2e", "types": {
                "RDS": {"version_sent": "b", "version_acked": "b"},
                "CDS": {"version_sent": "c"}}},
            {"stream": 2, "node_id": "c2.e2e", "types": {
                "RDS": {"version_sent": "b", "version_acked": "b"}}},
        ]}
        # An older stream's NACK counts: the client NACKed what it was sent.
        self.assertEqual(h.nacks(syncz, "c1.e2e"),
                         [("RDS", {"version": "a", "message": "invalid path specifier"})])
        self.assertEqual(h.unacked(syncz, "c1.e2e"), [("RDS", "a", "x"), ("CDS", "c", None)])
        self.assertEqual(h.nacks(syncz, "c2.e2e"), [])
        self.assertEqual(h.unacked(syncz, "c2.e2e"), [])


class ManifestHelpersTest(unittest.TestCase):
    def test_route_group_matches_move_under_spec_after_v1alpha2(self):
        m = [{"name": "a", "pathRegex": "/x"}]
        for version in ("v1alpha1", "v1alpha2"):
            g = h.http_route_group("ns", "g", m, version=version)
            self.assertEqual((g["matches"], "spec" in g), (m, False))
        for version in ("v1alpha3", "v1alpha4"):
            g = h.http_route_group("ns", "g", m, version=version)
            self.assertEqual((g["spec"], "matches" in g), ({"matches": m}, False))

    def test_backend_service_declarations(self):
        backend = ("127.0.0.1", 4000)
        port = lambda declares: [
            d["spec"]["ports"][0] if d["kind"] == "Service" else d["ports"][0]
            for d in h.backend_service("ns", "s", backend, declares=declares)]
        svc, eps = port("grpc")
        self.assertEqual((svc["name"], svc["appProtocol"], eps["appProtocol"]),
                         ("grpc", "grpc", "grpc"))
        svc, eps = port("http-name")
        self.assertEqual((svc["name"], "appProtocol" in svc, eps["name"], "appProtocol" in eps),
                         ("http", False, "http", False))
        svc, eps = port("nothing")
        self.assertEqual((set(svc), set(eps)), ({"port", "targetPort"}, {"port", "protocol"}))
        with self.assertRaises(ValueError):
            h.backend_service("ns", "s", backend, declares="http")


@unittest.skipUnless(HAVE_GRPC, "grpcio not installed (run tests/e2e/setup.sh)")
class RouteStatusTest(unittest.TestCase):
    def test_only_this_controllers_conditions(self):
        route = {"status": {"parents": [
            {"controllerName": "example.com/other",
             "conditions": [{"type": "Accepted", "status": "False"}]},
            {"controllerName": h.CONTROLLER_NAME,
             "conditions": [{"type": "Accepted", "status": "True"},
                            {"type": "ResolvedRefs", "status": "False",
                             "reason": "BackendNotFound"}]},
        ]}}
        conds = h.route_conditions(route)
        self.assertEqual(conds["Accepted"]["status"], "True")
        self.assertEqual(conds["ResolvedRefs"]["reason"], "BackendNotFound")
        self.assertEqual(h.route_conditions({}), {})


class ProcessesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lanyard-e2e-unit-")
        self.procs = h.Procs(self.dir)

    def tearDown(self):
        self.procs.kill_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_backends_answer_with_their_name_and_the_metadata(self):
        b = h.Backends(self.procs, ["one", "two"])
        self.assertNotEqual(b["one"][1], b["two"][1])
        # The client process on plain targets (no xDS): every op.
        client = h.Client(self.procs, self.dir, "127.0.0.1:1", "ns", "p")
        for name in ("one", "two"):
            target = f"{b[name][0]}:{b[name][1]}"
            self.assertEqual(client.ready(target)["backend"], name)
            got = client.calls(target, 5, method=h.OTHER, metadata=[("x-tier", "gold")])
            self.assertEqual(got["counts"], {name: 5})
            seen = got["responses"][name]
            self.assertEqual(seen["method"], h.OTHER)
            self.assertEqual(seen["metadata"]["x-tier"], "gold")
        target = f"127.0.0.1:{b['one'][1]}"
        client.start_run(target, max_seconds=0.3)
        calls = client.finish_run()
        self.assertGreater(len(calls), 10)
        self.assertEqual({c[2] for c in calls}, {"one"})
        client.start_run(target, max_seconds=5, stop={"backend": "one", "streak": 7})
        self.assertEqual(len(client.finish_run()), 7)

    def test_backends_sleep_and_fail_as_asked(self):
        b = h.Backends(self.procs, ["one"])
        client = h.Client(self.procs, self.dir, "127.0.0.1:1", "ns", "p")
        target = f"127.0.0.1:{b['one'][1]}"
        fail = [("x-fail-first", "k:2")]
        got = [client.calls(target, 1, metadata=fail) for _ in range(3)]
        self.assertEqual([sorted(g["errors"]) for g in got[:2]],
                         [["ERR:UNAVAILABLE: one: failing as asked"]] * 2)
        self.assertEqual(got[2]["counts"], {"one": 1})
        self.assertEqual(client.calls(target, 1, metadata=[("x-fail-first", "j:1")])["errors"],
                         {"ERR:UNAVAILABLE: one: failing as asked": 1})
        got = client.calls(target, 1, metadata=[("x-sleep-ms", "1500")], call_timeout=0.5)
        self.assertEqual(list(got["errors"]), ["ERR:DEADLINE_EXCEEDED: Deadline Exceeded"])
        self.assertEqual(client.calls(target, 1, metadata=[("x-sleep-ms", "50")])["counts"],
                         {"one": 1})

    def test_failures_are_labelled(self):
        b = h.Backends(self.procs, ["one"])
        client = h.Client(self.procs, self.dir, "127.0.0.1:1", "ns", "p")
        b.child.stop()
        got = client.calls(f"127.0.0.1:{b['one'][1]}", 2)
        self.assertEqual(got["counts"], {})
        self.assertEqual(sum(got["errors"].values()), 2)
        self.assertTrue(all(k.startswith("ERR:UNAVAILABLE") for k in got["errors"]))

    def test_children_die_with_kill_all(self):
        b = h.Backends(self.procs, ["one"])
        pid = b.child.proc.pid
        self.procs.kill_all()
        self.assertIsNotNone(b.child.proc.poll())
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)


def controller_built():
    try:
        h.controller_path()
        return True
    except h.E2EError:
        return False


@unittest.skipUnless(controller_built(), "no target/debug/lanyard-controller")
@unittest.skipUnless(HAVE_GRPC, "grpcio not installed (run tests/e2e/setup.sh)")
class ShareChangeTest(unittest.TestCase):
    """The change point of a weight change (h.share_change), on made-up timelines."""

    @staticmethod
    def draws(n, p, label="c", other="p", seed=0):
        import random
        rng = random.Random(seed)
        return [label if rng.random() < p else other for _ in range(n)]

    def test_finds_a_share_change(self):
        # 10% -> 25% at call 600 (t = 100.6); the write at 100.5.
        labels = self.draws(600, 0.10, seed=1) + self.draws(2400, 0.25, seed=2)
        r = h.share_change(timeline(labels), 100.5, "c", 0.10, 0.25)
        self.assertIsNotNone(r["latency"])
        self.assertLess(abs(r["latency"] - 0.1), 0.1)
        self.assertEqual(r["before"][1] + r["after"][1], 3000)

    def test_from_zero_is_the_first_new_call(self):
        labels = ["p"] * 700 + ["c"] + self.draws(1000, 0.5, seed=3)
        r = h.share_change(timeline(labels), 100.5, "c", 0.0, 0.5)
        self.assertAlmostEqual(r["latency"], 0.2, places=6)

    def test_to_one_is_after_the_last_old_call(self):
        labels = self.draws(800, 0.5, seed=4) + ["p"] + ["c"] * 300
        r = h.share_change(timeline(labels), 100.5, "c", 0.5, 1.0)
        self.assertAlmostEqual(r["latency"], 0.801 - 0.5, places=6)
        self.assertEqual(r["after"], [300, 300])

    def test_no_change_when_the_old_share_goes_on(self):
        labels = ["p"] * 2000
        r = h.share_change(timeline(labels), 100.5, "c", 0.0, 0.5)
        self.assertIsNone(r["latency"])

    def test_errors_count(self):
        labels = ["p"] * 600 + ["ERR:UNAVAILABLE: x"] + ["c"] * 100
        r = h.share_change(timeline(labels), 100.5, "c", 0.0, 1.0)
        self.assertEqual(r["errors"], 1)
        self.assertAlmostEqual(r["latency"], 0.101, places=6)


class ManifestsTest(unittest.TestCase):
    """Every scenario's manifests translate without errors (`--once`), with fake backends."""

    def test_scenario_manifests_translate(self):
        import run_e2e

        class FakeBackends:
            def __init__(self, names, hosts=None):
                self.addresses = {n: (hosts[n], 20000) if hosts else ("127.0.0.1", 20000 + i)
                                  for i, n in enumerate(names)}

            def __getitem__(self, name):
                return self.addresses[name]

        class Stop(Exception):
            pass

        for name, fn in run_e2e.SCENARIOS:
            with self.subTest(name):
                work = tempfile.mkdtemp(prefix="lanyard-e2e-unit-")
                ctx = None
                try:
                    ctx = run_e2e.Context(name, work)
                    ctx.backends = FakeBackends

                    reports = []
                    check_config = ctx.check_config

                    def checked():
                        reports.append(check_config())
                        return reports[-1]

                    def stop(**_source):
                        # Scenarios check their config just before they start the controller;
                        # one that did not is checked here.
                        if not reports:
                            checked()
                        raise Stop()

                    ctx.check_config = checked

                    ctx.start_controller = stop
                    with self.assertRaises(Stop):
                        fn(ctx)
                    self.assertNotIn("'False'", reports[-1])  # no condition False in the status
                finally:
                    # Kubernetes scenarios start the webhook and the API server before the
                    # controller: they must not outlive the check.
                    if ctx is not None:
                        ctx.procs.kill_all()
                    shutil.rmtree(work, ignore_errors=True)

    def test_nack_route_passes_the_translator(self):
        import run_e2e

        work = tempfile.mkdtemp(prefix="lanyard-e2e-unit-")
        try:
            cfg = h.ConfigDir(work)
            docs = []
            for i, name in enumerate(["nack", "n-before", "n-after"]):
                docs += h.backend_service("e2e", name, ("127.0.0.1", 20000 + i))
            cfg.write("services.yaml", docs)
            cfg.write("routes.yaml", run_e2e.nack_route("n-after", bad=True))
            proc = subprocess.run(
                [h.controller_path(), "--config-dir", work, "--once"],
                capture_output=True, text=True, timeout=30)
            self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
            self.assertNotIn("'False'", proc.stdout)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
