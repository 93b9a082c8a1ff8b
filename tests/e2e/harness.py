"""Pieces of Lanyard's gRPC end-to-end tests: child processes, manifests, the controller, the
gRPC client processes, the debug endpoint, and the statistics the checks use.

Standard library only (the client and backend processes use grpcio). Every wait is bounded and
every child process started here is killed by `Procs.kill_all()` (also at exit).
"""

import atexit
import base64
import datetime
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLUSTER_DOMAIN = "cluster.local"
GRPC_PORT = 50051
CALL = "/lanyard.e2e.Echo/Call"
OTHER = "/lanyard.e2e.Echo/Other"


class E2EError(AssertionError):
    """A failed check or a harness step that could not be done."""


# --------------------------------------------------------------------------------------------
# Child processes


class Child:
    """A child process in its own process group, its stdout read line by line into a queue and
    its stderr copied to a log file (kept for failure reports)."""

    def __init__(self, name, args, env=None, log_dir=None, stdin=True, merge=False):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log") if log_dir else os.devnull
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.lines = queue.Queue()
        self.stderr_lines = queue.Queue()
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        # merge: stdout and stderr both go to the log and to `lines` (for a program whose
        # stdout is not a protocol, like the controller).
        threading.Thread(target=self._pump,
                         args=(self.proc.stdout, self.lines, self._log if merge else None),
                         daemon=True).start()
        threading.Thread(target=self._pump,
                         args=(self.proc.stderr, self.lines if merge else self.stderr_lines,
                               self._log),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, into, log):
        try:
            for line in stream:
                if log is not None:
                    try:
                        log.write(line)
                        log.flush()
                    except ValueError:  # log closed
                        pass
                into.put(line.rstrip("\n"))
        except ValueError:
            pass
        into.put(None)  # EOF

    def send(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise E2EError(f"{self.name} is gone ({e}); log: {self.log_tail()}") from e

    def read_line(self, timeout, stream="stdout"):
        """The next line, or raises after `timeout` seconds / at EOF."""
        q = self.lines if stream == "stdout" else self.stderr_lines
        try:
            line = q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise E2EError(f"{self.name}: no output within {timeout:.1f}s; "
                           f"log: {self.log_tail()}") from None
        if line is None:
            q.put(None)
            code = self.proc.poll()
            raise E2EError(f"{self.name} ended (exit {code}); log: {self.log_tail()}")
        return line

    def wait_for(self, pattern, timeout, stream="stdout"):
        """Reads lines until one matches `pattern` (a regex); returns the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            line = self.read_line(deadline - time.monotonic(), stream)
            m = rx.search(line)
            if m:
                return m

    def log_tail(self, n=30):
        try:
            with open(self.log_path) as f:
                lines = f.readlines()
        except OSError:
            return "(no log)"
        return "".join(lines[-n:]).rstrip() or "(empty)"

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=3.0):
        """SIGTERM to its process group, SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self._log.close()


class Procs:
    """Every child a test started, killed together (in reverse order) at the end."""

    _all = []

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []

    def spawn(self, name, args, env=None, stdin=True, merge=False):
        child = Child(name, args, env=env, log_dir=self.log_dir, stdin=stdin, merge=merge)
        self.children.append(child)
        Procs._all.append(child)
        return child

    def kill_all(self):
        for child in reversed(self.children):
            child.stop()
            if child in Procs._all:
                Procs._all.remove(child)
        self.children = []

    @classmethod
    def kill_everything(cls):
        for child in reversed(cls._all):
            child.stop(grace=1.0)
        cls._all = []


atexit.register(Procs.kill_everything)


def python():
    """The interpreter for the grpcio processes: this one (run_e2e.py runs in the venv)."""
    return sys.executable


# --------------------------------------------------------------------------------------------
# YAML (a small block-style emitter: every string is double-quoted JSON, which is valid YAML)


def _scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value))


_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*$")


def _key(key):
    """Simple keys (apiVersion, kubernetes.io/service-name) bare, others quoted."""
    key = str(key)
    return key if _PLAIN_KEY.match(key) and key not in ("true", "false", "null", "yes",
                                                       "no", "on", "off") else json.dumps(key)


def _emit(value, indent, out):
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            out.append(pad + "{}")
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:")
                _emit(item, indent + 1, out)
            else:
                out.append(f"{pad}{_key(key)}: {_flow(item)}")
    elif isinstance(value, list):
        if not value:
            out.append(pad + "[]")
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = []
                _emit(item, indent + 1, sub)
                first = sub[0].lstrip()
                out.append(f"{pad}- {first}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_flow(item)}")
    else:
        out.append(pad + _scalar(value))


def _flow(value):
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    if isinstance(value, list):
        return "[]" if not value else json.dumps(value)
    return _scalar(value)


def to_yaml(docs):
    """Several documents, `---`-separated."""
    parts = []
    for doc in docs:
        out = []
        _emit(doc, 0, out)
        parts.append("\n".join(out) + "\n")
    return "---\n".join(parts)


# --------------------------------------------------------------------------------------------
# Manifests


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(ns, name, port=GRPC_PORT, app_protocol="grpc", selector=None):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [{"name": "grpc", "port": port, "targetPort": "grpc",
                       "appProtocol": app_protocol}],
        },
    }


def endpoint_slice(ns, svc, addresses, port, app_protocol="grpc", zone="z"):
    """The EndpointSlice of `svc`: `addresses` all serving `port` (the backend's real port)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{svc}-e2e", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP",
                   "appProtocol": app_protocol}],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True, "serving": True,
                                              "terminating": False},
             "zone": zone}
            for a in addresses
        ],
    }


def backend_service(ns, name, backend, port=GRPC_PORT, declares="grpc"):
    """A Service `name` whose only endpoint is `backend` ((host, port) from `Backends`).
    `declares` says what its port declares: "grpc" (port `grpc`, appProtocol grpc), "http-name"
    (port named `http`, no appProtocol: a common label for gRPC services in real clusters) or
    "nothing" (no port name, no appProtocol)."""
    host, bport = backend
    svc = service(ns, name, port)
    eps = endpoint_slice(ns, name, [host], bport)
    if declares == "http-name":
        svc["spec"]["ports"] = [{"name": "http", "port": port, "targetPort": bport}]
        eps["ports"] = [{"name": "http", "port": bport, "protocol": "TCP"}]
    elif declares == "nothing":
        svc["spec"]["ports"] = [{"port": port, "targetPort": bport}]
        eps["ports"] = [{"port": bport, "protocol": "TCP"}]
    elif declares != "grpc":
        raise ValueError(f"declares: grpc, http-name or nothing, not {declares!r}")
    return [svc, eps]


def parent(ns, svc, port=GRPC_PORT, namespace_=None):
    ref = {"group": "", "kind": "Service", "name": svc, "port": port}
    if namespace_:
        ref["namespace"] = namespace_
    return ref


def backend_ref(name, weight=None, port=GRPC_PORT, ns=None):
    ref = {"name": name, "port": port}
    if weight is not None:
        ref["weight"] = weight
    if ns:
        ref["namespace"] = ns
    return ref


def grpc_route(ns, name, parents, rules):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": parents, "rules": rules},
    }


def http_route(ns, name, parents, rules):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": parents, "rules": rules},
    }


def reference_grant(ns, name, from_kind, from_ns):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": from_kind,
                      "namespace": from_ns}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }


def pod_service(ns, name, selector, addresses, port, svc_port=GRPC_PORT):
    """A Service `name` with `selector` whose EndpointSlice lists the pods at `addresses`
    (all serving `port`, as `Backends(..., hosts=...)` starts them): the Service and the
    slice the endpoints controller would write for the pods the selector matches."""
    return [service(ns, name, svc_port, selector=selector),
            endpoint_slice(ns, name, addresses, port)]


def traffic_split(ns, name, root, backends, version="v1alpha2", matches=()):
    """An SMI TrafficSplit (split.smi-spec.io/`version`) of the root Service `root` over
    `backends` [(service, weight)]: weights as given (ints, or quantity strings like "900m"
    for v1alpha1); `matches`: HTTPRouteGroup names (v1alpha3 and later)."""
    spec = {"service": root}
    if matches:
        spec["matches"] = [{"kind": "HTTPRouteGroup", "name": m} for m in matches]
    spec["backends"] = [{"service": svc, "weight": w} for svc, w in backends]
    return {
        "apiVersion": f"split.smi-spec.io/{version}",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def http_route_group(ns, name, matches, version="v1alpha4"):
    """An SMI HTTPRouteGroup (specs.smi-spec.io/`version`); `matches` as the CRD has them:
    [{"name", "pathRegex", "methods", "headers": [{header: regex}, ...]}], at the top level
    in v1alpha1 and v1alpha2, under `spec` later."""
    group = {
        "apiVersion": f"specs.smi-spec.io/{version}",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": name, "namespace": ns},
    }
    if version in ("v1alpha1", "v1alpha2"):
        group["matches"] = matches
    else:
        group["spec"] = {"matches": matches}
    return group


def fqdn(svc, ns, port=GRPC_PORT):
    return f"{svc}.{ns}.svc.{CLUSTER_DOMAIN}:{port}"


def outbound_cluster(svc, ns, port=GRPC_PORT):
    """Lanyard's EDS cluster of a Service port (xds-server/src/names.rs)."""
    return f"outbound|{port}||{svc}.{ns}.svc.{CLUSTER_DOMAIN}"


class ConfigDir:
    """The directory the controller watches. Writes are atomic (a temporary name the controller
    ignores, then rename), as a careful editor or `kubectl`-like tool would do."""

    def __init__(self, path):
        self.path = path
        os.makedirs(path, exist_ok=True)

    def write(self, name, docs):
        """Writes `name` (e.g. `routes.yaml`); returns time.time() right after the rename."""
        final = os.path.join(self.path, name)
        tmp = os.path.join(self.path, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(to_yaml(docs))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return time.time()

    def remove(self, name):
        """Deletes `name`; returns time.time() right after the unlink."""
        os.remove(os.path.join(self.path, name))
        return time.time()


# --------------------------------------------------------------------------------------------
# Backends


def free_port(hosts):
    """A TCP port free on every address in `hosts` (checked by binding it on each)."""
    for _ in range(20):
        socks = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            for host in hosts[1:]:
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise E2EError(f"no port free on all of {hosts}")


class Backends:
    """One backend.py process serving several named backends on 127.0.0.1 (distinct ports);
    or, given `hosts` ({name: address}, e.g. 127.0.0.2, 127.0.0.3), one backend per address
    all on the same port, like pods behind one targetPort."""

    def __init__(self, procs, names, host="127.0.0.1", timeout=20.0, hosts=None):
        args = [python(), os.path.join(HERE, "backend.py")]
        port = free_port(sorted(set(hosts[n] for n in names))) if hosts else 0
        for name in names:
            args += ["--serve", f"{name}={hosts[name] if hosts else host}:{port}"]
        self.child = procs.spawn("backends", args)
        self.addresses = {}
        deadline = time.monotonic() + timeout
        while True:
            line = self.child.read_line(deadline - time.monotonic())
            if line == "READY":
                break
            parts = line.split()
            if len(parts) == 4 and parts[0] == "LISTENING":
                self.addresses[parts[1]] = (parts[2], int(parts[3]))
        missing = set(names) - set(self.addresses)
        if missing:
            raise E2EError(f"backends not listening: {sorted(missing)}")

    def __getitem__(self, name):
        return self.addresses[name]


# --------------------------------------------------------------------------------------------
# The controller and its debug endpoint

_LISTEN_RX = {
    "xds": re.compile(r"xds listening on\W*([0-9.]+:\d+|\[[0-9a-fA-F:]+\]:\d+)"),
    "debug": re.compile(r"debug listening on\W*([0-9.]+:\d+|\[[0-9a-fA-F:]+\]:\d+)"),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_listen_addresses(lines):
    """{"xds": "127.0.0.1:PORT", "debug": ...} from controller log lines (ANSI colours and
    tracing field quoting allowed)."""
    found = {}
    for line in lines:
        line = _ANSI.sub("", line)
        for key, rx in _LISTEN_RX.items():
            m = rx.search(line)
            if m and key not in found:
                found[key] = m.group(1)
    return found


def controller_path():
    path = os.environ.get("LANYARD_CONTROLLER") or os.path.join(
        ROOT, "target", "debug", "lanyard-controller")
    if not os.access(path, os.X_OK):
        raise E2EError(f"no controller binary at {path}: run `cargo build --bin "
                       "lanyard-controller` first (or set LANYARD_CONTROLLER)")
    return path


class Controller:
    """`lanyard-controller --config-dir DIR` (or, given `kubeconfig`, `--kubeconfig PATH`) on
    loopback ports it picks itself."""

    def __init__(self, procs, config_dir, timeout=30.0, extra_args=(), kubeconfig=None):
        env = dict(os.environ)
        env["RUST_LOG"] = os.environ.get("LANYARD_E2E_RUST_LOG", "info")
        env.pop("LANYARD_CONFIG_DIR", None)
        source = ["--kubeconfig", kubeconfig] if kubeconfig else ["--config-dir", config_dir]
        args = [controller_path(), *source,
                "--xds-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0",
                "--metrics-address", "127.0.0.1:0",
                *extra_args]
        # It prints `xds listening on ADDR` / `debug listening on ADDR` on stdout, logs on
        # stderr: read both.
        self.child = procs.spawn("controller", args, env=env, stdin=False, merge=True)
        seen = []
        deadline = time.monotonic() + timeout
        found = {}
        while len(found) < 2:
            seen.append(self.child.read_line(deadline - time.monotonic()))
            found = parse_listen_addresses(seen)
        self.xds_address = found["xds"]
        self.debug_address = found["debug"]

    def get(self, path, timeout=5.0):
        url = f"http://{self.debug_address}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            raise E2EError(f"GET {url}: {e}") from e

    def get_json(self, path):
        status, body = self.get(path)
        if status != 200:
            raise E2EError(f"GET {path}: {status} {body[:300]}")
        return json.loads(body)

    def metrics(self):
        status, body = self.get("/metrics")
        if status != 200:
            raise E2EError(f"GET /metrics: {status}")
        return parse_prometheus(body)

    def generation(self):
        """The generation of the snapshot the server publishes (`/readyz`: `ready: snapshot
        N`), or -1 before the first."""
        status, body = self.get("/readyz")
        m = re.search(r"snapshot (\d+)", body)
        return int(m.group(1)) if status == 200 and m else -1

    def wait_generation_after(self, generation, timeout=10.0):
        """Waits until a snapshot newer than `generation` is published; returns its
        generation."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.generation()
            if now > generation:
                return now
            if time.monotonic() > deadline:
                raise E2EError(f"no snapshot after generation {generation} within {timeout}s "
                               f"(still {now}); log: {self.child.log_tail()}")
            time.sleep(0.02)

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.get("/readyz", timeout=2)
                if last[0] == 200:
                    return
            except E2EError as e:
                last = str(e)
            time.sleep(0.1)
        raise E2EError(f"/readyz not 200 within {timeout}s: {last}")


# --------------------------------------------------------------------------------------------
# The loopback Kubernetes API server (tests/apiserver) and kubectl

KUBECTL = os.environ.get("LANYARD_KUBECTL", "/usr/bin/kubectl")
# The controller that writes route status (lanyard_index::status::DEFAULT_CONTROLLER_NAME).
CONTROLLER_NAME = "lanyard.dev/mesh-controller"


def apiserver_path():
    path = os.environ.get("LANYARD_TEST_APISERVER") or os.path.join(
        os.path.dirname(controller_path()), "lanyard-test-apiserver")
    if not os.access(path, os.X_OK):
        raise E2EError(f"no loopback API server binary at {path}: run `cargo build --bin "
                       "lanyard-test-apiserver` first (or set LANYARD_TEST_APISERVER)")
    return path


class ApiServer:
    """`lanyard-test-apiserver` (the loopback Kubernetes API server test fixture) on a port it
    picks itself; `kubeconfig` is the path it prints. `webhook_services`: {"namespace/name:port":
    "127.0.0.1:PORT"}, where the Services that conversion webhooks name listen (there is no
    cluster DNS), passed as `--webhook-service KEY=ADDR`."""

    def __init__(self, procs, timeout=20.0, webhook_services=None):
        args = [apiserver_path()]
        for key, addr in (webhook_services or {}).items():
            args += ["--webhook-service", f"{key}={addr}"]
        self.child = procs.spawn("apiserver", args, stdin=False)
        self.kubeconfig = self.child.read_line(timeout).strip()
        if not os.path.isfile(self.kubeconfig):
            raise E2EError(f"the API server printed {self.kubeconfig!r}, not a kubeconfig; "
                           f"log: {self.child.log_tail()}")

    def kubectl(self, *args, input=None, timeout=30.0):
        """Runs the real kubectl against this server; its stdout (raises on failure)."""
        proc = subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise E2EError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def apply(self, docs):
        return self.kubectl("apply", "-f", "-", input=to_yaml(docs))


# --------------------------------------------------------------------------------------------
# lanyard-webhook (SMI CRD conversion) and Lanyard's SMI CRDs

OPENSSL = os.environ.get("LANYARD_OPENSSL", "/usr/bin/openssl")
CRD_DIR = os.path.join(ROOT, "crds", "smi")


def webhook_path():
    path = os.environ.get("LANYARD_WEBHOOK") or os.path.join(
        os.path.dirname(controller_path()), "lanyard-webhook")
    if not os.access(path, os.X_OK):
        raise E2EError(f"no webhook binary at {path}: run `cargo build --bin lanyard-webhook` "
                       "first (or set LANYARD_WEBHOOK)")
    return path


def serving_certificate(directory, dns_name, days=1):
    """A self-signed serving certificate for `dns_name` (CN and SAN; CA:FALSE, as rustls wants
    of a leaf) made with the openssl CLI: (cert path, key path, cert PEM)."""
    cert = os.path.join(directory, "webhook.crt")
    key = os.path.join(directory, "webhook.key")
    proc = subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={dns_name}",
         "-addext", f"subjectAltName=DNS:{dns_name}",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "extendedKeyUsage=serverAuth"],
        capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise E2EError(f"openssl req failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(cert) as f:
        return cert, key, f.read()


class Webhook:
    """`lanyard-webhook --listen 127.0.0.1:0 --tls-cert C --tls-key K`; `address` is the one it
    prints (`webhook listening on ADDR`)."""

    def __init__(self, procs, cert, key, timeout=20.0):
        env = dict(os.environ)
        env["RUST_LOG"] = os.environ.get("LANYARD_E2E_RUST_LOG", "info")
        args = [webhook_path(), "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]
        self.child = procs.spawn("webhook", args, env=env, stdin=False, merge=True)
        m = self.child.wait_for(r"^webhook listening on (\S+)$", timeout)
        self.address = m.group(1)


def smi_crds(ca_pem):
    """Lanyard's SMI CRDs (crds/smi/*.yaml) as one YAML stream, with
    `spec.conversion.webhook.clientConfig.caBundle` set to base64 of `ca_pem`, as an installer
    sets it. (No YAML library here: the line goes right under `clientConfig:`.)"""
    bundle = base64.b64encode(ca_pem.encode()).decode()
    docs = []
    for name in sorted(os.listdir(CRD_DIR)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(CRD_DIR, name)) as f:
            text = f.read()
        rx = re.compile(r"^( *)clientConfig:\n", re.M)
        found = rx.findall(text)
        if len(found) != 1 or "name: lanyard-webhook" not in text:
            raise E2EError(f"{name}: expected one conversion webhook clientConfig naming "
                           "lanyard-webhook (harness out of date with crds/smi?)")
        text = rx.sub(lambda m: f"{m.group(0)}{m.group(1)}  caBundle: {bundle}\n", text)
        docs.append(text.rstrip("\n") + "\n")
    if len(docs) != 3:
        raise E2EError(f"expected 3 CRDs in {CRD_DIR}, found {len(docs)}")
    return "---\n".join(docs)


def route_conditions(obj, controller_name=CONTROLLER_NAME):
    """{type: condition} of `controller_name`'s entries in a route's `status.parents`."""
    found = {}
    for p in (obj.get("status") or {}).get("parents") or []:
        if p.get("controllerName") == controller_name:
            for c in p.get("conditions") or []:
                found[c.get("type")] = c
    return found


def parse_prometheus(text):
    """Prometheus text format -> [(name, {label: value}, float)] (comments skipped)."""
    samples = []
    rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_rx = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = rx.match(line)
        if not m:
            continue
        labels = {k: bytes(v, "utf-8").decode("unicode_escape")
                  for k, v in label_rx.findall(m.group(3) or "")}
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        samples.append((m.group(1), labels, value))
    return samples


def metric_sum(samples, name_contains, **labels):
    """Sum of the samples whose name contains `name_contains` (and not `_bucket`/`_sum`/
    `_count` of a histogram) and whose labels contain each given label value as a substring."""
    total = 0.0
    for name, sample_labels, value in samples:
        if name_contains not in name or name.endswith(("_bucket", "_sum", "_count")):
            continue
        if all(v in sample_labels.get(k, "") for k, v in labels.items()):
            total += value
    return total


# --------------------------------------------------------------------------------------------
# gRPC client processes


def bootstrap(xds_address, node_id, ns, pod, zone="z"):
    """gRPC's xDS bootstrap for a proxyless client `pod` in namespace `ns`."""
    return {
        "xds_servers": [{
            "server_uri": xds_address,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node_id,
            "cluster": ns,
            "metadata": {"NAMESPACE": ns, "POD_NAME": pod},
            "locality": {"region": "r", "zone": zone},
        },
    }


class Client:
    """A client.py process with its own bootstrap (one xDS identity)."""

    def __init__(self, procs, work_dir, xds_address, ns, pod, timeout=20.0):
        self.node_id = f"{pod}.{ns}"
        self.namespace = ns
        path = os.path.join(work_dir, f"bootstrap-{pod}.{ns}.json")
        with open(path, "w") as f:
            json.dump(bootstrap(xds_address, self.node_id, ns, pod), f, indent=2)
        env = dict(os.environ)
        env["GRPC_XDS_BOOTSTRAP"] = path
        env.setdefault("GRPC_VERBOSITY", "ERROR")
        if os.environ.get("LANYARD_E2E_GRPC_TRACE"):
            env["GRPC_TRACE"] = os.environ["LANYARD_E2E_GRPC_TRACE"]
            env["GRPC_VERBOSITY"] = "DEBUG"
        self.child = procs.spawn(f"client-{pod}.{ns}", [python(), os.path.join(HERE, "client.py")],
                                 env=env)
        self._expect(timeout, "hello")

    def _expect(self, timeout, event=None):
        doc = json.loads(self.child.read_line(timeout))
        if "error" in doc:
            raise E2EError(f"{self.child.name}: {doc['error']}")
        if event and doc.get("event") != event:
            raise E2EError(f"{self.child.name}: expected {event}, got {doc}")
        return doc

    def request(self, cmd, timeout):
        self.child.send(json.dumps(cmd))
        return self._expect(timeout)

    def ready(self, target, method=CALL, timeout=20.0, metadata=()):
        doc = self.request({"op": "ready", "target": target, "method": method,
                            "metadata": [list(m) for m in metadata], "timeout": timeout},
                           timeout + 5)
        if not doc.get("ok"):
            raise E2EError(f"{self.node_id}: {target} never answered within {timeout}s: "
                           f"{doc.get('error')}")
        return doc

    def calls(self, target, n, method=CALL, metadata=(), timeout=60.0, call_timeout=5):
        """`n` calls; each has a deadline of `call_timeout` seconds."""
        return self.request({"op": "calls", "target": target, "method": method, "n": n,
                             "metadata": [list(m) for m in metadata],
                             "timeout": call_timeout}, timeout)

    def start_run(self, target, max_seconds, method=CALL, metadata=(), stop=None):
        cmd = {"op": "run", "target": target, "method": method,
               "metadata": [list(m) for m in metadata], "max_seconds": max_seconds}
        if stop:
            cmd["stop"] = stop
        self._run_max = max_seconds
        self.child.send(json.dumps(cmd))
        return self._expect(10, "started")

    def finish_run(self):
        return self._expect(self._run_max + 15)["calls"]

    def stop(self):
        """Ends the process (its xDS streams close)."""
        self.child.stop(grace=1.0)


# --------------------------------------------------------------------------------------------
# Statistics and timelines


def binomial_band(n, p, k_sd=4.0):
    """[lo, hi] for the count of a share `p` in `n` independent calls: mean ± k_sd standard
    deviations, sqrt(n p (1-p)). At 4 sd a correct split fails once in ~16,000 checks (normal
    approximation; two-sided tail 6.3e-5)."""
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return max(0, math.floor(mean - k_sd * sd)), min(n, math.ceil(mean + k_sd * sd))


def check_split(counts, weights, k_sd=4.0):
    """Checks that `counts` ({backend: calls}) follow `weights` ({backend: weight}); returns a
    printable summary, raises E2EError when a share falls outside its band or a call reached a
    backend with no weight."""
    n = sum(counts.values())
    total = sum(weights.values())
    lines, bad = [], []
    for name in sorted(set(counts) | set(weights)):
        got = counts.get(name, 0)
        p = weights.get(name, 0) / total
        if p == 0:
            lo, hi = 0, 0
        elif p == 1:
            lo, hi = n, n
        else:
            lo, hi = binomial_band(n, p, k_sd)
        ok = lo <= got <= hi
        lines.append(f"{name}: {got}/{n} ({100 * got / max(n, 1):.1f}%, weight "
                     f"{100 * p:.0f}%, accepted {lo}..{hi})")
        if not ok:
            bad.append(name)
    summary = "; ".join(lines)
    if bad:
        raise E2EError(f"split off for {bad}: {summary}")
    return summary


def analyse_change(calls, t_change, old, new, streak=100):
    """Convergence of a live change from a timeline [[t_sent, t_answered, label], ...].

    Converged = the first call sent after the last call that still reached an `old` backend
    (or failed); every later call reached `new`. Returns a dict: latency (seconds from the
    change to convergence), counts before/after the change, errors, and whether the timeline
    shows the change at all (old seen before it, a run of >= `streak` calls to `new` after)."""
    old = set([old] if isinstance(old, str) else old)
    before = [c for c in calls if c[0] < t_change]
    after = [c for c in calls if c[0] >= t_change]
    errors = [c for c in calls if c[2].startswith("ERR:")]
    last_bad = None
    for i, c in enumerate(calls):
        if c[2] != new:
            last_bad = i
    if last_bad is None:
        converged_at = calls[0][0] if calls else None
        tail = len(calls)
    else:
        tail = len(calls) - last_bad - 1
        converged_at = calls[last_bad + 1][0] if tail else None
    count = lambda cs: {k: sum(1 for c in cs if c[2] == k) for k in sorted({c[2] for c in cs})}
    return {
        "latency": None if converged_at is None else converged_at - t_change,
        "before": count(before),
        "after": count(after),
        "errors": len(errors),
        "old_seen_before": any(c[2] in old for c in before),
        "tail": tail,
        "converged": converged_at is not None and tail >= streak,
    }


def share_change(calls, t_change, new, p_old, p_new):
    """Where a timeline [[t_sent, t_answered, label], ...] switches from share `p_old` of calls
    reaching `new` (a backend label or a set of them) to share `p_new`, for a weight change made
    at `t_change`: the maximum-likelihood change point among the calls sent after `t_change`
    (each call a Bernoulli draw; a share of 0 or 1 makes a single contrary call decisive, so
    for 0 -> p it is the first `new` call and for p -> 1 the call after the last other one).
    Failed calls count as not `new`. Returns a dict: latency (seconds from `t_change` to the
    change point, None when the calls after it fit `p_old` better), before / after ([hits,
    calls] of `new` on each side of the change point) and errors."""
    new = set([new] if isinstance(new, str) else new)
    xs = [c[2] in new for c in calls]
    n = len(calls)

    def logp(p, x):
        q = p if x else 1.0 - p
        return math.log(q) if q > 0 else -math.inf

    # suffix[k] = log-likelihood of calls k.. under p_new; prefix under p_old.
    suffix = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] + logp(p_new, xs[i])
    k0 = next((i for i, c in enumerate(calls) if c[0] >= t_change), n)
    prefix = sum(logp(p_old, x) for x in xs[:k0])
    best_k, best = n, prefix + suffix[n] if k0 == n else -math.inf
    for k in range(k0, n + 1):
        ll = prefix + suffix[k]
        if ll > best or (best_k == n and ll == best and k < n and ll > -math.inf):
            best_k, best = k, ll
        if k < n:
            prefix += logp(p_old, xs[k])
    if best == -math.inf or best_k == n:
        latency = None
    else:
        latency = calls[best_k][0] - t_change
    return {
        "latency": latency,
        "index": best_k,
        "before": [sum(xs[:best_k]), best_k],
        "after": [sum(xs[best_k:]), n - best_k],
        "errors": sum(1 for c in calls if c[2].startswith("ERR:")),
    }


def proxy_sync(syncz, node_id):
    """The newest stream of proxy `node_id` in /debug/syncz (`{"proxies": [{"stream": N,
    "node_id": ..., "types": {"LDS": {"version_sent", "version_acked", "last_nack": {"version",
    "message", ...}, "pushes", ...}, "RDS": ...}}]}`), or None when it is not connected."""
    streams = [p for p in syncz.get("proxies", []) if p.get("node_id") == node_id]
    return max(streams, key=lambda p: p.get("stream", 0)) if streams else None


def nacks(syncz, node_id):
    """Every NACK proxy `node_id` sent, on any of its streams: [(type, last_nack)]."""
    found = []
    for proxy in syncz.get("proxies", []):
        if proxy.get("node_id") != node_id:
            continue
        for ty, sync in sorted((proxy.get("types") or {}).items()):
            if (sync or {}).get("last_nack"):
                found.append((ty, sync["last_nack"]))
    return found


def unacked(syncz, node_id):
    """The types whose last version sent to `node_id` (on any stream) is not acknowledged:
    [(type, sent, acked)]."""
    found = []
    for proxy in syncz.get("proxies", []):
        if proxy.get("node_id") != node_id:
            continue
        for ty, sync in sorted((proxy.get("types") or {}).items()):
            sent, acked = (sync or {}).get("version_sent"), (sync or {}).get("version_acked")
            if sent and sent != acked:
                found.append((ty, sent, acked))
    return found


def type_sync(syncz, node_id, ty):
    """`types[ty]` of proxy `node_id` ({} when absent)."""
    proxy = proxy_sync(syncz, node_id) or {}
    return (proxy.get("types") or {}).get(ty) or {}


def epoch(rfc3339):
    """`2024-02-29T12:34:56.789Z` (the debug endpoint's timestamps) -> seconds since the epoch."""
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
