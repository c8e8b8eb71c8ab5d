"""Who can reach the app, and so who its operator is: decided once, from the app's flags.

    exposure = decide_exposure(share=False, auth=None, host="0.0.0.0", key=None)
    exposure.operator   # "nobody": restart and benchmark are refused on every page

An app that only this machine can reach (listening on loopback, no share link) and that asks
for no login is one person's: everyone who reaches it is its operator. An app reachable from
the network (a non-loopback `--host`, `--share`) or given logins (`--auth`, a class shares
them) belongs to its visitors too: the operator controls stay locked until the operator key is
entered on the page, and with no key they are off. A key given to a private app locks it too.

`app.py` decides this and hands it to every UI worker explicitly (`--operator`); a worker never
infers it from its own address, which is loopback behind the front whatever the public one is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

OPERATORS = ("everyone", "key", "nobody")


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass(frozen=True)
class Exposure:
    """Why others can reach the app (empty: only this machine's user), and who operates it."""

    reasons: tuple[str, ...]
    operator: str  # one of OPERATORS

    @property
    def public(self) -> bool:
        return bool(self.reasons)


def decide_exposure(share: bool, auth: str | None, host: str, key: str | None) -> Exposure:
    """The exposure of an app started with these flags."""
    reasons = []
    if share:
        reasons.append("--share")
    if auth:
        reasons.append("--auth")
    if not is_loopback(host):
        reasons.append(f"--host {host}")
    if key:
        operator = "key"
    else:
        operator = "nobody" if reasons else "everyone"
    return Exposure(tuple(reasons), operator)
