"""The error a user can act on: the message says what went wrong and what to do.

Stages raise it (or a subclass) for bad input, unusable sources and counts that do not reconcile;
the `dmf` command prints the message and exits 1, without a traceback.
"""


class PipelineError(RuntimeError):
    """A stage cannot do what was asked; the message says why and how to fix it."""
