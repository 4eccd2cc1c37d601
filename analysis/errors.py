"""The one base class of every error a user can act on.

Each layer raises its own subclass (a bad setting, an unsupported architecture, an export
target that is not ours, ...), always with a message that says what was wrong and what to
do next. The CLI and the dashboard catch `EntroDropError` and show that message as one
line; anything else reaching them is a bug and is reported as an internal error.

It subclasses ValueError so that callers that treated these as bad values keep working.
"""

from __future__ import annotations


class EntroDropError(ValueError):
    """A user-facing error: the message says what was wrong and what to do next."""
