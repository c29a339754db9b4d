"""pw-bot commands in list replies (netdev's mailbot): `pw-bot: changes-requested` on a
line of its own, outside quoted text, asks for the series' Patchwork state. Pure parsing."""

from __future__ import annotations

import re

STATES = ("changes-requested", "accepted", "rejected", "superseded", "awaiting-upstream",
          "deferred", "new", "under-review")  # fmt: skip
# netdev's short forms
ALIASES = {"cr": "changes-requested", "accept": "accepted", "reject": "rejected",
           "supersede": "superseded", "defer": "deferred", "review": "under-review"}  # fmt: skip
_LINE = re.compile(r"^pw-bot:[ \t]*([A-Za-z-]+)[ \t]*$", re.MULTILINE)


def command(body: str) -> tuple[str | None, str | None]:
    """(the state asked for, or None; the word that is no state, or None). The last
    command of the mail wins; quoted lines (`> pw-bot: ...`) are someone else's."""
    found = _LINE.findall(body)
    if not found:
        return None, None
    word = found[-1].lower()
    state = ALIASES.get(word, word)
    return (state, None) if state in STATES else (None, word)
