"""One exception type for every user-facing failure.

The CLI turns an `EdgediffError` into a single line on stderr and a non-zero exit code; anything else is a bug
and keeps its traceback. Messages say what is wrong *and* what to do about it.
"""

# How to get the training side. edgediff is installed from its checkout (it is not on the package index), and a plain
# `pip install torch` takes the multi-GB CUDA build: the CPU index gives the small one.
TRAIN_INSTALL = ("from a checkout of edgediff: pip install torch==2.13.0 --index-url "
                 "https://download.pytorch.org/whl/cpu && pip install -e '.[train]'")


class EdgediffError(Exception):
    """A problem the user can fix: bad input, a missing file, a budget that is too small."""


class Interrupted(Exception):
    """Ctrl-C, turned into the one line that says what was kept (the CLI prints it and exits 130).

    Deliberately not a KeyboardInterrupt: typer would swallow that into a return value, and not an EdgediffError:
    an interrupt is not the user's mistake and must not exit 2.
    """
