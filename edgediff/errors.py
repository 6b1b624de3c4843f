"""One exception type for every user-facing failure.

The CLI turns an `EdgediffError` into a single line on stderr and a non-zero exit code; anything else is a bug
and keeps its traceback. Messages say what is wrong *and* what to do about it.
"""


class EdgediffError(Exception):
    """A problem the user can fix: bad input, a missing file, a budget that is too small."""
