#!/usr/bin/env bash
# Debian packages the gateway's tests and benchmarks use as real peers:
# DCMTK (modality tools), Orthanc (a real PACS), dicom3tools (dciodvfy), PostgreSQL,
# headless Chromium and its driver (the admin UI's and OHIF's browser tests), PixelMed's
# validators (DicomSRValidator, DicomInstanceValidator).
# With arguments: install exactly those packages instead (e.g. python3-venv).
set -euo pipefail
if (($# > 0)); then
    packages=("$@")
else
    packages=(dcmtk orthanc orthanc-dicomweb dicom3tools postgresql-client openssl redis-server
        chromium chromium-driver pixelmed-apps
        podman runc debootstrap  # the container images and compose file (tests/deploy)
        strace  # tests/listener/test_durability_order.py: the order of syncs, commit, response
        prometheus)  # promtool: tests/web/test_alert_rules.py runs deploy/prometheus/alerts_test.yml
    # Triton's Python backend loads the interpreter's shared libpython; Debian's own python3
    # ships it in a separate package.
    python="$(command -v python3 || true)"
    if [[ "$python" == /usr/bin/python3 ]]; then
        version="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        packages+=("libpython${version}")
    fi
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d may refuse to start the packaged Orthanc service; tests start their own.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
