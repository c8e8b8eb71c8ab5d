"""Who may do what on the page: chatting is for everyone; restarting the engine and running
benchmarks are the operator's.

On a private app (no `--share`, no `--auth`, listening on loopback only, no operator key) the
one person at the keyboard is the operator. Anywhere else (a share link, a login shared with a
class, an address others can reach) the operator controls stay locked until the operator key
(`--operator-key`, or `QWEN_DEMO_OPERATOR_KEY`) is entered on the page; without a key they are
off. The check is made on the server side of every such event, not only by hiding buttons.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class OperatorPolicy:
    """Whether a session may use the operator controls, and why not."""

    open: bool  # everyone is the operator (a private app)
    key: str | None = None  # the operator key that unlocks a session

    def allowed(self, unlocked: bool) -> bool:
        return self.open or bool(unlocked)

    def check_key(self, given: str | None) -> bool:
        return bool(self.key and given) and secrets.compare_digest(str(given), self.key)

    @property
    def locked_reason(self) -> str:
        if self.key:
            return "Operator controls are locked: enter the operator key (Operator, above)."
        return (
            "Operator controls are off on a shared app: start it with --operator-key KEY "
            "(or QWEN_DEMO_OPERATOR_KEY) to run benchmarks and restart the engine from the page."
        )


def operator_policy(share: bool, auth: bool, host: str, key: str | None) -> OperatorPolicy:
    """The policy of an app started with these settings."""
    private = not share and not auth and host in LOOPBACK and not key
    return OperatorPolicy(open=private, key=key or None)
