#!/usr/bin/env bash
# Copies what charts/weft renders verbatim from the kustomize install: the
# CRDs (crds/) and the RBAC (config/rbac/), into charts/weft/files/. Helm
# cannot read files outside the chart, and one source for each keeps the two
# installs equal (charts/weft's test compares them). Run by `make generate`;
# `make verify` fails when the copies are stale.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/charts/weft/files"
rm -rf "$OUT/crds" "$OUT/rbac"
mkdir -p "$OUT/crds" "$OUT/rbac"
cp "$ROOT"/crds/mesh.weft.dev_*.yaml "$OUT/crds/"
for f in service_account cluster_role role bindings; do
	cp "$ROOT/config/rbac/$f.yaml" "$OUT/rbac/$f.yaml"
done
