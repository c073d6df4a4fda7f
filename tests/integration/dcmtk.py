"""DCMTK command-line tools (Debian package dcmtk) as a real modality, always with timeouts."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.integration.tls_pki import KeyPair

TOOL_TIMEOUT_S = 60
# DCMTK's own network timeouts, so a stalled peer fails the tool before our timeout.
_TIMEOUTS = ("-to", "20", "-ta", "20", "-td", "20")


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    output: str  # stdout and stderr together

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_tool(tool: str, *args: str, timeout_s: float = TOOL_TIMEOUT_S) -> ToolResult:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(f"expected DCMTK's {tool} on PATH, found none")
    result = subprocess.run(
        [path, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout_s,
        check=False,
    )
    return ToolResult(result.returncode, result.stdout)


def tls_options(
    client: KeyPair | None, ca_cert: Path, *, anonymous: bool = False
) -> tuple[str, ...]:
    """+tls with a client key/cert (or +tla: TLS without a certificate), trusting `ca_cert`."""
    if anonymous or client is None:
        return ("+tla", "+cf", str(ca_cert))
    return ("+tls", str(client.key), str(client.cert), "+cf", str(ca_cert))


def echoscu(port: int, *, calling: str, called: str, extra: tuple[str, ...] = ()) -> ToolResult:
    return run_tool(
        "echoscu", "-v", *_TIMEOUTS, "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port)
    )


def storescu(
    port: int,
    paths: list[Path],
    *,
    calling: str,
    called: str,
    extra: tuple[str, ...] = (),
) -> ToolResult:
    return run_tool(
        "storescu",
        "-v",
        *_TIMEOUTS,
        "-aet",
        calling,
        "-aec",
        called,
        *extra,
        "127.0.0.1",
        str(port),
        *(str(path) for path in paths),
    )


def association_profile(
    path: Path, contexts: set[tuple[str, str]], profile: str = "Gateway"
) -> tuple[str, ...]:
    """Write a storescu association config with one presentation context per (SOP class UID,
    transfer syntax UID) pair, so each file goes in its own syntax without conversion (plain
    storescu proposes uncompressed syntaxes only and would try to decompress). Returns the
    `-xf` options that use it."""
    syntaxes = sorted({syntax for _, syntax in contexts})
    names = {syntax: f"TS{number}" for number, syntax in enumerate(syntaxes, start=1)}
    lines = ["[[TransferSyntaxes]]"]
    for syntax in syntaxes:
        lines += [f"[{names[syntax]}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for number, (sop_class, syntax) in enumerate(sorted(contexts), start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\{names[syntax]}")
    lines += ["[[Profiles]]", f"[{profile}]", "PresentationContexts = Contexts"]
    path.write_text("\n".join(lines) + "\n")
    return ("-xf", str(path), profile)
