"""The one exception family users see.

Anything raised as a ``ClrdistError`` is a problem with the user's input (a file, a config, a
store) rather than a bug: the CLI prints its message on one line, without a traceback, and
exits with status 2. Messages name the file or key and the problem.
"""


class ClrdistError(Exception):
    """Base class for user-facing errors (bad input, bad config, bad store)."""
