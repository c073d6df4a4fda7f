"""Who may associate: calling AE title plus source address, and the called AE title."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from gateway.settings import AllowedPeer


class RejectReason(enum.Enum):
    """A-ASSOCIATE-RJ (result, source, diagnostic) per PS3.8 9.3.4."""

    CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
    CALLED_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)


@dataclass(frozen=True, slots=True)
class _Rule:
    ae_title: str  # "*" for any
    network: ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerPolicy:
    """Deny by default; allow a calling AE only from its configured networks."""

    def __init__(
        self, own_ae_title: str, allowed: list[AllowedPeer], *, require_called_ae_title: bool
    ) -> None:
        self.own_ae_title = own_ae_title
        self.require_called_ae_title = require_called_ae_title
        self._rules = tuple(
            _Rule(peer.ae_title, ipaddress.ip_network(peer.host, strict=False)) for peer in allowed
        )

    def check(self, calling_ae: str, called_ae: str, address: str) -> RejectReason | None:
        """None if the association may proceed, else the reason to reject it."""
        if self.require_called_ae_title and called_ae.strip() != self.own_ae_title:
            return RejectReason.CALLED_AE_NOT_RECOGNIZED
        try:
            source = ipaddress.ip_address(address)
        except ValueError:
            return RejectReason.CALLING_AE_NOT_RECOGNIZED
        if isinstance(source, ipaddress.IPv6Address) and source.ipv4_mapped is not None:
            source = source.ipv4_mapped
        calling = calling_ae.strip()
        for rule in self._rules:
            if rule.ae_title in ("*", calling) and source in rule.network:
                return None
        return RejectReason.CALLING_AE_NOT_RECOGNIZED
