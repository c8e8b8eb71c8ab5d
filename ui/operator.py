"""Who may do what on the page: chatting is for everyone; restarting the engine and running
benchmarks are the operator's.

Who the operator is comes from the app (`launch.exposure`, passed as `--operator`): everyone
on a private app; whoever enters the operator key (`--operator-key`, or
`QWEN_DEMO_OPERATOR_KEY`) where a key is set; nobody on an app others can reach without one.
The check is made on the server side of every such event, not only by hiding buttons.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


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
            "Operator controls are off on an app others can reach: start it with --operator-key "
            "KEY (or QWEN_DEMO_OPERATOR_KEY) to run benchmarks and restart the engine from the "
            "page."
        )


def operator_policy(operator: str, key: str | None) -> OperatorPolicy:
    """The policy for the app's decision `operator` ("everyone", "key" or "nobody")."""
    if operator == "key" and not key:
        raise ValueError("--operator key needs the key in QWEN_DEMO_OPERATOR_KEY")
    return OperatorPolicy(open=operator == "everyone", key=key if operator == "key" else None)
