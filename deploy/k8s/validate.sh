#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, against the API schemas bundled with
# kubernetes-validate (no cluster needed):
#   - every *.yaml / *.yml under the folder (default: this script's folder), except
#     kustomization.yaml, with `kubernetes-validate --strict` (unknown fields are
#     errors) for the newest Kubernetes versions it bundles (3 unless
#     K8S_VERSIONS="1.35 1.36 ..." is set); a resource it has no schema for (a
#     misspelt kind or apiVersion, which it only warns about) fails too;
#   - kustomization.yaml lists exactly the manifests outside example/, and, when
#     kubectl is installed, `kubectl kustomize` builds;
#   - the resources agree with each other (selectors, serviceName, grace period).
# Usage: deploy/k8s/validate.sh [DIR]. Exit 0 when all passes, non-zero otherwise.
set -euo pipefail

KV_VERSION=1.37.0 # kubernetes-validate, pinned: its bundled schemas decide the versions
PYTHON=${PYTHON:-python3}
DIR=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
DIR=$(cd "$DIR" && pwd)

have=$("$PYTHON" -c 'from kubernetes_validate.version import __version__; print(__version__)' 2>/dev/null || true)
if [ -z "$have" ]; then
    echo "installing kubernetes-validate==$KV_VERSION"
    "$PYTHON" -m pip install --quiet "kubernetes-validate==$KV_VERSION"
    have=$KV_VERSION
elif [ "$have" != "$KV_VERSION" ]; then
    echo "note: kubernetes-validate $have installed; this script was written against $KV_VERSION"
fi

mapfile -t files < <(cd "$DIR" && find . -type f \( -name '*.yaml' -o -name '*.yml' \) \
    ! -name 'kustomization.yaml' ! -name 'kustomization.yml' | sed 's|^\./||' | LC_ALL=C sort)
if [ "${#files[@]}" -eq 0 ]; then
    echo "FAIL: no manifests under $DIR" >&2
    exit 1
fi

if [ -n "${K8S_VERSIONS:-}" ]; then
    read -r -a versions <<<"$K8S_VERSIONS"
else
    mapfile -t versions < <("$PYTHON" -c '
from packaging.version import Version
from kubernetes_validate.utils import all_versions
for v in sorted(set(all_versions()), key=Version)[-3:]:
    print(v)')
fi
kargs=()
for v in "${versions[@]}"; do kargs+=(-k "$v"); done

echo "kubernetes-validate $have --strict, Kubernetes ${versions[*]}, in $DIR:"
out=$(cd "$DIR" && "$PYTHON" -m kubernetes_validate --strict "${kargs[@]}" "${files[@]}" 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
fail=0
if [ "$rc" -ne 0 ]; then
    echo "FAIL: kubernetes-validate exited with $rc"
    fail=1
fi
if grep -qv '^INFO ' <<<"$out"; then
    echo "FAIL: kubernetes-validate reported warnings or errors (above)"
    fail=1
fi

# Counts, the kustomization's list, and the resources' agreement with each other.
(cd "$DIR" && "$PYTHON" - "${#versions[@]}" "$(grep -c '^INFO .* passed ' <<<"$out" || true)" "${files[@]}" <<'EOF'
import os, sys, yaml

n_versions, n_passed, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
problems = []
docs = []  # (file, resource)
for f in files:
    try:
        with open(f) as fh:
            got = [d for d in yaml.safe_load_all(fh) if d]
    except yaml.YAMLError as e:
        print(f"FAIL: {f}: not YAML: {' '.join(str(e).split())}")
        sys.exit(1)
    if not got:
        problems.append(f"{f}: no resource in it")
    docs += [(f, d) for d in got]

if n_passed != len(docs) * n_versions:
    problems.append(f"{n_passed} passes for {len(docs)} resources x {n_versions} versions")
else:
    print(f"ok: {len(docs)} resources in {len(files)} files passed for each of {n_versions} versions")

for k in ("kustomization.yaml", "kustomization.yml"):
    if os.path.exists(k):
        with open(k) as fh:
            listed = set((yaml.safe_load(fh) or {}).get("resources") or [])
        wanted = {f for f in files if not f.startswith("example/")}
        if listed != wanted:
            problems.append(f"{k}: lists {sorted(listed)}, manifests are {sorted(wanted)}")
        else:
            print(f"ok: {k} lists every manifest outside example/")

def by_kind(kind):
    return [d for _, d in docs if d.get("kind") == kind]

def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def agree():
    """Problems among the resources: selectors, serviceName, ports, grace period."""
    found = []
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    for sts in by_kind("StatefulSet"):
        name, spec = sts["metadata"]["name"], sts["spec"]
        pod = spec["template"]
        labels = pod["metadata"].get("labels") or {}
        if not selects(spec["selector"].get("matchLabels"), labels):
            found.append(f"StatefulSet {name}: selector does not match its pod labels")
        svc = services.get(spec.get("serviceName"))
        if svc is None or svc["spec"].get("clusterIP") != "None":
            found.append(f"StatefulSet {name}: serviceName is not a headless Service here")
        elif not svc["spec"].get("publishNotReadyAddresses"):
            found.append(f"Service {svc['metadata']['name']}: needs publishNotReadyAddresses")
        for s in services.values():
            if not selects(s["spec"].get("selector"), labels):
                found.append(f"Service {s['metadata']['name']}: selects no pod of {name}")
        for p in by_kind("PodDisruptionBudget"):
            if not selects(p["spec"]["selector"].get("matchLabels"), labels):
                found.append(f"PodDisruptionBudget {p['metadata']['name']}: selects no pod of {name}")
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        for c in pod["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            drain_ms = int(env.get("TROUPE_DRAIN_TIMEOUT_MS") or 30000)
            if grace * 1000 <= drain_ms:
                found.append(f"StatefulSet {name}: terminationGracePeriodSeconds {grace} "
                             f"is not above the drain timeout ({drain_ms} ms)")
            ports = {p["name"] for p in c.get("ports") or []}
            for s in services.values():
                for sp in s["spec"]["ports"]:
                    if isinstance(sp.get("targetPort"), str) and sp["targetPort"] not in ports:
                        found.append(f"Service {s['metadata']['name']}: targetPort "
                                     f"{sp['targetPort']} is no port of {name}")
    return found

try:
    found = agree()
except (KeyError, TypeError, AttributeError, ValueError) as e:
    found = [f"cannot check the resources against each other: {e!r}"]
if not found:
    print("ok: selectors, serviceName, ports and grace period agree")
problems += found
for p in problems:
    print(f"FAIL: {p}")
sys.exit(1 if problems else 0)
EOF
) || fail=1

if [ -f "$DIR/kustomization.yaml" ] || [ -f "$DIR/kustomization.yml" ]; then
    if command -v kubectl >/dev/null 2>&1; then
        if built=$(kubectl kustomize "$DIR" 2>&1); then
            echo "ok: kubectl kustomize builds ($(grep -c '^kind: ' <<<"$built") resources)"
        else
            printf '%s\n' "$built"
            echo "FAIL: kubectl kustomize $DIR"
            fail=1
        fi
    else
        echo "skipped: kubectl kustomize (no kubectl)"
    fi
fi

if [ "$fail" -ne 0 ]; then
    echo "validation FAILED"
    exit 1
fi
echo "validation passed"
