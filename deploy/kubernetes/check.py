#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes (no cluster needed; run by net/tests/deploy.rs).

Kubernetes' own schema check needs an API server; these check what makes the manifests
work as a keel cluster: every resource listed and well-formed, --initial-cluster naming
exactly the StatefulSet's pods through its headless Service, env references defined before
use, probes on keel's /livez and /readyz, volumes mounted, a disruption budget that keeps
a quorum. Exits 1 with one line per problem.
"""
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KNOWN_KINDS = {
    ("v1", "Service"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
}
problems = []


def problem(text):
    problems.append(text)


def load():
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    present = sorted(p.name for p in HERE.glob("*.yaml") if p.name != "kustomization.yaml")
    if sorted(listed) != present:
        problem(f"kustomization lists {sorted(listed)}, the folder holds {present}")
    objects = []
    for name in listed:
        for doc in yaml.safe_load_all((HERE / name).read_text()):
            if doc is None:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in KNOWN_KINDS:
                problem(f"{name}: unexpected apiVersion/kind {key}")
            if not doc.get("metadata", {}).get("name"):
                problem(f"{name}: a {key[1]} without a name")
            objects.append(doc)
    return objects


def one(objects, kind, **match):
    found = [o for o in objects if o["kind"] == kind
             and all(o["metadata"].get(k) == v for k, v in match.items())]
    if len(found) != 1:
        problem(f"expected one {kind} {match or ''}, found {len(found)}")
        return {}
    return found[0]


def check_env(container):
    defined = set()
    env = {}
    for var in container.get("env", []):
        value = var.get("value", "")
        for ref in re.findall(r"\$\((\w+)\)", value):
            if ref not in defined:
                problem(f"env {var['name']} uses $({ref}) before it is defined")
        defined.add(var["name"])
        env[var["name"]] = value
    return env


def check(objects):
    sts = one(objects, "StatefulSet")
    if not sts:
        return
    spec = sts["spec"]
    replicas = spec["replicas"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    if spec["selector"]["matchLabels"].items() - labels.items():
        problem("the StatefulSet's selector does not match its pods' labels")
    headless = one(objects, "Service", name=spec["serviceName"])
    if headless:
        if headless["spec"].get("clusterIP") != "None":
            problem("the StatefulSet's serviceName is not a headless Service")
        if not headless["spec"].get("publishNotReadyAddresses"):
            problem("peers must resolve before they are ready: publishNotReadyAddresses")
    (container,) = pod["spec"]["containers"]
    env = check_env(container)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports != {"client": 2379, "peer": 2380}:
        problem(f"container ports {ports}")
    name = sts["metadata"]["name"]
    host = f"{spec['serviceName']}.$(POD_NAMESPACE).svc"
    expected = ",".join(f"{name}-{i}=http://{name}-{i}.{host}:2380" for i in range(replicas))
    if env.get("KEEL_INITIAL_CLUSTER") != expected:
        problem(f"KEEL_INITIAL_CLUSTER should be {expected}")
    if env.get("KEEL_INITIAL_ADVERTISE_PEER_URLS") != f"http://$(KEEL_NAME).{host}:2380":
        problem("KEEL_INITIAL_ADVERTISE_PEER_URLS does not name the pod's peer address")
    for probe, path in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")]:
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ports:
            problem(f"{probe} should GET {path} on a container port")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    if not claims <= mounts.keys():
        problem(f"volume claims {claims} not all mounted ({mounts})")
    if not env.get("KEEL_DATA_DIR", "").startswith(tuple(mounts.values())):
        problem("KEEL_DATA_DIR is not on a mounted volume")
    pdb = one(objects, "PodDisruptionBudget")
    if pdb:
        if pdb["spec"]["selector"]["matchLabels"].items() - labels.items():
            problem("the PodDisruptionBudget selects no keel pod")
        if pdb["spec"].get("maxUnavailable", replicas) > (replicas - 1) // 2:
            problem("the PodDisruptionBudget lets a drain take the quorum")
    for service in (o for o in objects if o["kind"] == "Service"):
        if service["spec"]["selector"].items() - labels.items():
            problem(f"Service {service['metadata']['name']} selects no keel pod")


check(load())
for line in problems:
    print(f"deploy/kubernetes: {line}")
sys.exit(1 if problems else 0)
