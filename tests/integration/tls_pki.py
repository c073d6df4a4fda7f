"""A throwaway PKI made with the `openssl` command line: CAs, a server and client certs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT_S = 60


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


@dataclass(frozen=True)
class KeyPair:
    key: Path
    cert: Path


def make_ca(directory: Path, name: str) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.key", directory / f"{name}.crt")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        str(pair.key),
        "-out",
        str(pair.cert),
        cwd=directory,
    )
    return pair


def issue(ca: KeyPair, directory: Path, name: str, *, server: bool) -> KeyPair:
    """A leaf certificate signed by `ca`: for a server (SAN 127.0.0.1, localhost) or client."""
    pair = KeyPair(directory / f"{name}.key", directory / f"{name}.crt")
    csr = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if server:
        lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    extensions.write_text("\n".join(lines) + "\n")
    subject = "/CN=localhost" if server else f"/CN={name}"
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-subj",
        subject,
        "-keyout",
        str(pair.key),
        "-out",
        str(csr),
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-sha256",
        "-days",
        "2",
        "-extfile",
        str(extensions),
        "-out",
        str(pair.cert),
        cwd=directory,
    )
    return pair


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair
    foreign_client: KeyPair  # signed by other_ca, which the gateway does not trust


def make_pki(directory: Path) -> Pki:
    ca = make_ca(directory, "gateway-test-ca")
    other_ca = make_ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=issue(ca, directory, "server", server=True),
        client=issue(ca, directory, "client", server=False),
        other_ca=other_ca,
        foreign_client=issue(other_ca, directory, "foreign-client", server=False),
    )
