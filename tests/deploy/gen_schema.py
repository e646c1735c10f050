#!/usr/bin/env python3
"""Writes charts/its-camera-ai/values.schema.json.

The schema is written out by this script rather than by hand so that the repeated shapes
(resources, probes, scheduling fields of each component) stay identical. Run it after changing
the chart's values, then `tests/deploy/check.sh`. check_chart.py fails when the committed file
differs from what this script writes.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "charts/its-camera-ai/values.schema.json"


def obj(props, required=(), extra=False, **kw):
    s = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        s["required"] = list(required)
    s.update(kw)
    return s


STR = {"type": "string"}
BOOL = {"type": "boolean"}
ANY_OBJ = {"type": "object"}
QUANTITY = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"},
        {"type": "number", "minimum": 0},
    ]
}
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)
K8S_NAME = {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", "maxLength": 253}


def int_range(lo, hi=None):
    s = {"type": "integer", "minimum": lo}
    if hi is not None:
        s["maximum"] = hi
    return s


def probe():
    return obj(
        {
            "enabled": BOOL,
            "periodSeconds": int_range(1, 300),
            "failureThreshold": int_range(1, 1000),
            "timeoutSeconds": int_range(1, 60),
        },
        required=["enabled"],
    )


def pdb():
    return obj(
        {
            "enabled": BOOL,
            "maxUnavailable": {"anyOf": [int_range(0), {"type": "string", "pattern": "^[0-9]+%$"}]},
            "minAvailable": {"anyOf": [int_range(0), {"type": "string", "pattern": "^[0-9]+%$"}]},
        },
        required=["enabled"],
    )


def component(extra_props, required=()):
    props = {
        "enabled": BOOL,
        "resources": RESOURCES,
        "nodeSelector": {"type": "object", "additionalProperties": STR},
        "tolerations": {"type": "array", "items": ANY_OBJ},
        "affinity": ANY_OBJ,
        "priorityClassName": STR,
        "terminationGracePeriodSeconds": {
            **int_range(0, 3600),
            "description": "seconds between SIGTERM and SIGKILL; the node drains its queues in it",
        },
        "preStopSleepSeconds": int_range(0, 600),
        "pdb": pdb(),
        "config": {
            "type": "object",
            "description": "its.toml settings merged over .config (docs/CONFIG.md)",
        },
        "extraArgs": {"type": "array", "items": STR},
        "extraEnv": {
            "type": "array",
            "items": obj({"name": STR, "value": STR, "valueFrom": ANY_OBJ}, required=["name"]),
        },
    }
    props.update(extra_props)
    return obj(props, required=["enabled", *required])


SCHEMA = obj(
    {
        "global": ANY_OBJ,
        "nameOverride": STR,
        "fullnameOverride": {**K8S_NAME, "maxLength": 26},
        "image": obj(
            {
                "registry": STR,
                "gpuRepository": {"type": "string", "minLength": 1},
                "slimRepository": {"type": "string", "minLength": 1},
                "tag": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$|^$"},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "pullSecrets": {"type": "array", "items": K8S_NAME},
            },
            required=["gpuRepository", "slimRepository", "pullPolicy"],
        ),
        "config": obj(
            {
                "version": {"const": 1},
                "node": ANY_OBJ,
                "nats": ANY_OBJ,
                "cameras": ANY_OBJ,
                "scheduler": ANY_OBJ,
                "engine": ANY_OBJ,
                "status": ANY_OBJ,
                "admin": ANY_OBJ,
            },
            extra=True,
            description="its.toml settings for every pod (docs/CONFIG.md); the binary checks each key",
        ),
        "logLevel": {"type": "string", "minLength": 1},
        "nats": obj({"enabled": BOOL}, required=["enabled"], extra=True),
        "externalNats": obj(
            {
                "url": {
                    "type": "string",
                    "pattern": r"^$|^((nats|tls|ws|wss)://[^,\s]+)(,(nats|tls|ws|wss)://[^,\s]+)*$",
                    "description": "comma-separated nats:// or tls:// URLs",
                },
                "auth": obj(
                    {
                        "type": {"enum": ["none", "token", "userPassword", "credsFile"]},
                        "existingSecret": K8S_NAME,
                        "tokenKey": {"type": "string", "minLength": 1},
                        "userKey": {"type": "string", "minLength": 1},
                        "passwordKey": {"type": "string", "minLength": 1},
                        "credsKey": {"type": "string", "minLength": 1},
                    },
                    required=["type"],
                ),
                "tls": obj({"enabled": BOOL, "caSecret": K8S_NAME, "caKey": {"type": "string", "minLength": 1}}),
            },
            required=["url", "auth", "tls"],
        ),
        "cameras": obj(
            {
                "count": int_range(0, 100000),
                "registry": BOOL,
                "synthetic": BOOL,
                "fps": {"type": "number", "minimum": 0.1, "maximum": 120},
                "width": int_range(16, 8192),
                "height": int_range(16, 8192),
            },
            required=["count", "registry", "synthetic", "fps", "width", "height"],
        ),
        "serviceAccount": obj(
            {"create": BOOL, "name": K8S_NAME, "annotations": {"type": "object", "additionalProperties": STR}, "automountToken": BOOL},
            required=["create"],
        ),
        "podAnnotations": {"type": "object", "additionalProperties": STR},
        "podLabels": {"type": "object", "additionalProperties": STR},
        "podSecurityContext": ANY_OBJ,
        "securityContext": ANY_OBJ,
        "http": obj({"enabled": BOOL, "port": int_range(1024, 65535)}, required=["enabled", "port"]),
        "probes": obj(
            {"startup": probe(), "liveness": probe(), "readiness": probe()},
            required=["startup", "liveness", "readiness"],
        ),
        "models": obj({"volume": ANY_OBJ, "mountPath": {"type": "string", "pattern": "^/"}}),
        "gpu": component(
            {
                "kind": {"enum": ["DaemonSet", "StatefulSet"]},
                "replicas": int_range(0, 10000),
                "gpusPerPod": int_range(1, 16),
                "runtimeClassName": STR,
                "drainLabel": {"type": "string", "pattern": r"^([a-z0-9.-]+/)?[A-Za-z0-9_.-]{0,63}$"},
                "maxUnavailable": {"anyOf": [int_range(1), {"type": "string", "pattern": "^[0-9]+%$"}]},
            },
            required=["kind", "gpusPerPod"],
        ),
        "ingest": component(
            {
                "camerasPerReplica": int_range(1, 10000),
                "minReplicas": int_range(0, 10000),
                "hpa": obj(
                    {
                        "enabled": BOOL,
                        "minReplicas": int_range(1, 10000),
                        "maxReplicas": int_range(1, 10000),
                        "targetCPUUtilizationPercentage": int_range(1, 100),
                    },
                    required=["enabled"],
                ),
            },
            required=["camerasPerReplica"],
        ),
        "admin": component(
            {
                "replicas": int_range(0, 100),
                "service": obj(
                    {
                        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "port": int_range(1, 65535),
                        "annotations": {"type": "object", "additionalProperties": STR},
                    },
                    required=["type", "port"],
                ),
                "ingress": obj(
                    {
                        "enabled": BOOL,
                        "className": STR,
                        "annotations": {"type": "object", "additionalProperties": STR},
                        "hosts": {
                            "type": "array",
                            "items": obj(
                                {
                                    "host": {"type": "string", "minLength": 1},
                                    "paths": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": obj(
                                            {
                                                "path": {"type": "string", "pattern": "^/"},
                                                "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                                            },
                                            required=["path", "pathType"],
                                        ),
                                    },
                                },
                                required=["host", "paths"],
                            ),
                        },
                        "tls": {"type": "array", "items": ANY_OBJ},
                    },
                    required=["enabled"],
                ),
                "tokens": obj(
                    {"existingSecret": K8S_NAME, "key": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"}, "content": STR},
                    required=["key"],
                ),
            }
        ),
        "metrics": obj(
            {
                "serviceMonitor": obj(
                    {
                        "enabled": BOOL,
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "labels": {"type": "object", "additionalProperties": STR},
                    },
                    required=["enabled"],
                )
            }
        ),
        "networkPolicy": obj(
            {
                "enabled": BOOL,
                "httpFrom": {"type": "array", "items": ANY_OBJ},
                "externalNatsPort": int_range(1, 65535),
                "extraEgress": {"type": "array", "items": ANY_OBJ},
            },
            required=["enabled"],
        ),
    },
    required=["image", "config", "nats", "externalNats", "cameras", "http", "probes", "gpu", "ingest", "admin"],
    **{"$schema": "https://json-schema.org/draft-07/schema#", "title": "its-camera-ai values"},
)


NATS_OUT = ROOT / "charts/its-camera-ai/charts/nats/values.schema.json"
NATS_SIZE = {"type": "string", "pattern": r"^[0-9]+(K|M|G|T|KB|MB|GB|TB)?$"}
NATS_SCHEMA = obj(
    {
        "global": ANY_OBJ,
        "enabled": BOOL,
        "image": obj(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": "string", "minLength": 1},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            required=["repository", "tag"],
        ),
        "replicas": {
            "type": "integer",
            "minimum": 1,
            "maximum": 9,
            "not": {"const": 2},
            "description": "1, or 3 and more (a cluster of 2 loses JetStream quorum with either server)",
        },
        "maxPayload": int_range(1024, 64 * 1024 * 1024),
        "auth": obj({"enabled": BOOL, "token": STR, "existingSecret": K8S_NAME}, required=["enabled"]),
        "jetstream": obj(
            {
                "enabled": BOOL,
                "storageSize": QUANTITY,
                "storageClassName": STR,
                "maxFileStore": NATS_SIZE,
                "maxMemory": NATS_SIZE,
            },
            required=["enabled"],
        ),
        "resources": RESOURCES,
        "nodeSelector": {"type": "object", "additionalProperties": STR},
        "tolerations": {"type": "array", "items": ANY_OBJ},
        "affinity": ANY_OBJ,
    },
    required=["image", "replicas", "auth", "jetstream"],
    **{"$schema": "https://json-schema.org/draft-07/schema#", "title": "nats (its-camera-ai subchart) values"},
)


def render(schema: dict = SCHEMA) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    outputs = {OUT: render(SCHEMA), NATS_OUT: render(NATS_SCHEMA)}
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if all(p.read_text() == text for p, text in outputs.items()) else 1)
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
