"""The one exception family users see.

Anything raised as a ``ClrdistError`` is a problem with the user's input (a file, a config, a
store) rather than a bug: the CLI prints its message on one line, without a traceback, and
exits with status 2. Messages name the file or key and the problem.
"""

import re


class ClrdistError(Exception):
    """Base class for user-facing errors (bad input, bad config, bad store)."""


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (MLflow's ``message`` when it has one),
    for one-line errors and failure tags; the type name when the message is empty."""
    text = str(getattr(e, "message", None) or e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# A name that becomes a file or folder (a run's checkpoint folder, a sweep's Tune folder, a
# split's store): no separators and no '..', so it cannot escape the folder it is meant for
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$"


def is_plain_name(value: object) -> bool:
    """``value`` is a plain file name: letters, digits, ``_ . + -``, no ``/``, no ``..``."""
    return isinstance(value, str) and re.match(PLAIN_NAME, value) is not None and ".." not in value
