#!/usr/bin/env bash
# Build the container images with podman (docs/containers.md):
#   localhost/debian:bookworm   base, made by debootstrap when no registry is reachable
#                               (skipped when it exists; BASE_IMAGE=... to use another)
#   localhost/pacs-gateway      listener, web UI, worker, migrations (deploy/images/Containerfile)
#   localhost/pacs-triton       CPU Triton from the nvidia-pytriton wheel + triton_models/
#   localhost/pacs-services     Debian's PostgreSQL and Redis (ORTHANC=1: also the demo Orthanc)
# The host's pip configuration and CA bundle are mounted into the build, never copied.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm}"
TAG="${TAG:-latest}"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
BUILD_FLAGS=(--format docker --network=host --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 --layers
    --build-arg "BASE_IMAGE=$BASE_IMAGE")

if [[ "$BASE_IMAGE" == localhost/debian:bookworm ]] && ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    echo "making $BASE_IMAGE with debootstrap"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null
fi

# pip inside the build: this machine's CA bundle and configuration, as read-only mounts.
cert="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
if [[ -f "$cert" ]]; then
    BUILD_FLAGS+=(-v "$cert:/run/host-ca.pem:ro" --build-arg PIP_CERT=/run/host-ca.pem)
fi
config="${PIP_CONFIG_FILE:-}"
if [[ -z "$config" ]]; then
    for candidate in /etc/pip.conf /etc/xdg/pip/pip.conf; do
        [[ -f "$candidate" ]] && config="$candidate" && break
    done
fi
if [[ -n "$config" ]]; then
    BUILD_FLAGS+=(-v "$config:/run/host-pip.conf:ro" --build-arg PIP_CONFIG_FILE=/run/host-pip.conf)
    # a constraint file the configuration names is mounted at its own path
    constraint="$(sed -n 's/^[[:space:]]*constraint[[:space:]]*=[[:space:]]*//p' "$config" | head -1)"
    if [[ -n "$constraint" && -f "$constraint" ]]; then
        BUILD_FLAGS+=(-v "$constraint:$constraint:ro")
    fi
fi

build() {
    local image="$1" file="$2"
    shift 2
    local started=$SECONDS
    "${PODMAN[@]}" build "${BUILD_FLAGS[@]}" --ignorefile deploy/images/containerignore -f "$file" -t "$image:$TAG" "$@" . \
        > >(grep -E '^(STEP|COMMIT|Error|error)' || true)
    echo "built $image:$TAG in $((SECONDS - started)) s"
}

build localhost/pacs-gateway deploy/images/Containerfile
build localhost/pacs-triton deploy/images/Containerfile.triton
build localhost/pacs-services deploy/images/Containerfile.services --target services
if [[ "${ORTHANC:-0}" == 1 ]]; then
    build localhost/pacs-orthanc deploy/images/Containerfile.services --target orthanc
fi
