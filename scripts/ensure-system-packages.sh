#!/usr/bin/env bash
# Debian packages the gateway's tests and benchmarks use as real peers:
# DCMTK (modality tools), Orthanc (a real PACS), dicom3tools (dciodvfy), PostgreSQL.
set -euo pipefail
packages=(dcmtk orthanc orthanc-dicomweb dicom3tools postgresql-client openssl)
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
