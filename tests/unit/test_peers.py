from gateway.dicom.peers import PeerPolicy, RejectReason
from gateway.settings import AllowedPeer


def policy(*peers: tuple[str, str]) -> PeerPolicy:
    return PeerPolicy(
        "GW", [AllowedPeer(ae_title=a, host=h) for a, h in peers], require_called_ae_title=True
    )


def test_ae_title_and_network_must_both_match() -> None:
    p = policy(("CT1", "10.1.0.0/16"), ("*", "192.168.5.7"))
    assert p.check("CT1", "GW", "10.1.2.3") is None
    assert p.check("CT1", "GW", "10.2.0.1") is RejectReason.CALLING_AE_NOT_RECOGNIZED
    assert p.check("MR1", "GW", "10.1.2.3") is RejectReason.CALLING_AE_NOT_RECOGNIZED
    assert p.check("ANY", "GW", "192.168.5.7") is None
    assert p.check("ANY", "GW", "::ffff:192.168.5.7") is None  # IPv4-mapped IPv6


def test_called_ae_title_checked_first() -> None:
    p = policy(("CT1", "10.1.0.0/16"))
    assert p.check("CT1", "OTHER", "10.1.2.3") is RejectReason.CALLED_AE_NOT_RECOGNIZED
    relaxed = PeerPolicy(
        "GW", [AllowedPeer(ae_title="CT1", host="10.1.0.0/16")], require_called_ae_title=False
    )
    assert relaxed.check("CT1", "OTHER", "10.1.2.3") is None


def test_empty_policy_denies_everyone() -> None:
    assert policy().check("CT1", "GW", "127.0.0.1") is RejectReason.CALLING_AE_NOT_RECOGNIZED
