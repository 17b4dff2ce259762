"""Which modalities may associate: ``AET`` or ``AET@IP-or-CIDR`` entries.

Why not pynetdicom's ``require_calling_aet``: it is one global list of AE
titles and knows nothing about addresses, while a hospital wants "CT01, but
only from the CT's own IP". The check runs in ``EVT_REQUESTED``, before any
presentation context is negotiated, and answers A-ASSOCIATE-RJ
(calling AE title not recognised).

Other facilities of the provincial network (issue 15) are admitted the same
way: the EMR keeps them in a table an admin edits, and hands the gateway an
``extra`` callable returning their ``AET@address`` entries; it is asked again
at most every ``refresh`` seconds, so a site added or disabled takes effect
without a restart. If it fails, the last good list is kept (a database
hiccup must not lock out, nor suddenly admit, anyone).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["PeerRule", "PeerPolicy", "ExtraPeers"]

log = logging.getLogger(__name__)

ExtraPeers = Callable[[], Iterable[str]]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerRule:
    ae_title: str  # "*" matches any AE title
    network: IPNetwork | None  # None matches any address

    @classmethod
    def parse(cls, entry: str) -> PeerRule:
        aet, sep, addr = entry.strip().partition("@")
        aet = aet.strip()
        if not aet:
            raise ValueError(f"empty AE title in allowed peer {entry!r}")
        network = ipaddress.ip_network(addr.strip(), strict=False) if sep else None
        return cls(aet, network)

    def matches(self, ae_title: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if self.ae_title != "*" and self.ae_title != ae_title:
            return False
        if self.network is None:
            return True
        return address is not None and address.version == self.network.version and address in self.network


def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class PeerPolicy:
    """The allow-list built from ``GatewaySettings.allowed_peers``."""

    def __init__(
        self, entries: tuple[str, ...] | list[str], extra: ExtraPeers | None = None, refresh: float = 5.0
    ) -> None:
        self.rules = tuple(PeerRule.parse(e) for e in entries)
        self._extra = extra
        self._refresh = refresh
        self._extra_rules: tuple[PeerRule, ...] = ()
        self._extra_at = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()
        # The first list is read from the moment the policy exists (the gateway's start),
        # not when the first modality connects.
        self._first = threading.Event()
        if extra is not None:
            self._refreshing = True
            threading.Thread(target=self._refresh_extra, name="pacs-peer-refresh", daemon=True).start()

    def _all_rules(self) -> tuple[PeerRule, ...]:
        """The configured rules and the EMR's sites.

        The EMR's list (a database query, and a DNS lookup per site given by
        name) is read by a background thread: first when the policy is made
        (a check waits for that first answer), then whenever it is older
        than ``refresh`` while connections are checked against the last good
        one. The acceptor thread, which every modality's connection waits
        on, thus never runs the query itself.
        """
        if self._extra is None:
            return self.rules
        if not self._first.is_set() and not self._first.wait(10):
            with self._lock:  # the first read never finished (a forked copy, a hung query): read here
                if not self._first.is_set():
                    self._load_extra()
                    self._first.set()
        if time.monotonic() - self._extra_at >= self._refresh:
            with self._lock:
                if not self._refreshing and time.monotonic() - self._extra_at >= self._refresh:
                    self._refreshing = True
                    threading.Thread(target=self._refresh_extra, name="pacs-peer-refresh", daemon=True).start()
        return self.rules + self._extra_rules

    def _load_extra(self) -> None:
        assert self._extra is not None
        self._extra_at = time.monotonic()
        try:
            self._extra_rules = tuple(PeerRule.parse(e) for e in self._extra())
        except Exception as exc:  # noqa: BLE001 - keep the last good list
            log.warning("could not refresh the network sites allowed to connect: %s", exc)

    def _refresh_extra(self) -> None:
        try:
            self._load_extra()
        finally:
            self._refreshing = False
            self._first.set()

    def address_allowed(self, address: str) -> bool:
        """Whether any rule could accept a peer at ``address`` (checked at TCP accept, before any PDU)."""
        ip = _parse_ip(address)
        return any(rule.network is None or rule.matches(rule.ae_title, ip) for rule in self._all_rules())

    def check(self, ae_title: str, address: str) -> str | None:
        """``None`` when allowed, otherwise the reason for the log line."""
        ae_title = ae_title.strip()
        ip = _parse_ip(address)
        rules = self._all_rules()
        if any(rule.matches(ae_title, ip) for rule in rules):
            return None
        known = [r for r in rules if r.ae_title in (ae_title, "*")]
        if not known:
            return f"calling AE title {ae_title!r} is not in the allowed peers"
        return f"calling AE title {ae_title!r} is not allowed from address {address}"
