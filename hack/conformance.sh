#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against a running
# Slipway, as a service account with edit rights in two projects.
# Usage: hack/conformance.sh CONFORMANCE_BINARY RESULTS_DIR
# Needs SLIPWAY_CONFIG logged in as an admin, and slipway on PATH.
set -euo pipefail
bin=$1 results=$2
reg=${REGISTRY:-127.0.0.1:5000}
p1=conf-$RANDOM p2=conf-$RANDOM
slipway new-project "$p1" >/dev/null
slipway new-project "$p2" >/dev/null
slipway create serviceaccount tester -n "$p1" >/dev/null
slipway policy add-role-to-user edit -z tester -n "$p1" >/dev/null
printf 'kind: RoleBinding\nmetadata: {name: edit-tester, namespace: %s}\nroleRef: {kind: ClusterRole, name: edit}\nsubjects: [{kind: ServiceAccount, name: tester, namespace: %s}]\n' "$p2" "$p1" | slipway apply -f - >/dev/null
token=$(slipway create token tester -n "$p1" 2>/dev/null | tail -1)
mkdir -p "$results"
cd "$results"
OCI_REGISTRY=$reg OCI_TLS=disabled OCI_REPO1=$p1/repo1 OCI_REPO2=$p2/repo2 \
OCI_USERNAME=tester OCI_PASSWORD=$token \
OCI_API_PULL=true OCI_API_PUSH=true OCI_API_REFERRER=true \
OCI_API_BLOBS_DELETE=true OCI_API_MANIFESTS_DELETE=true OCI_API_TAGS_DELETE=true OCI_API_TAGS_LIST=true \
OCI_RESULTS_DIR="$results" "$bin"
