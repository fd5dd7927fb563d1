"""The one error type of the readers: :class:`ReadError`.

Every way a log can fail to become a :class:`satmon.Run` raises a :class:`ReadError` whose
message names the file (and the line, record or byte offset where it can) and says what is
wrong: empty, truncated, corrupt or unrecognised content, malformed lines, JSON nested deeper
than Python's parser allows, steps or values out of range (a step must be below 2**63, a value
must fit a float), non-numeric values in a needed series, a duplicated CSV column, a step that
is not a whole number, and inputs refused by ``strict=True``. Unexpected failures inside a
parser are converted too (the original exception is chained as ``__cause__``), so one bad file
never escapes as a bare traceback.

``ReadError`` subclasses ValueError, so code that caught ValueError keeps working. A configured
metric key that the log does not hold raises :class:`MissingKeyError`, a ReadError that is also
a KeyError (as before). A missing path still raises FileNotFoundError and a missing optional
package (``tensorboard``, ``mlflow``) ImportError with the pip extra to install.

Example
-------
>>> try:
...     raise ReadError("run.csv, line 3: expected 3 columns, got 2.", source="run.csv")
... except ValueError as exc:
...     (type(exc).__name__, exc.source)
('ReadError', 'run.csv')
"""

from __future__ import annotations

from satmon.keys import UnknownKeyError


class ReadError(ValueError):
    """A log could not be read (or was refused); the message names the file and the problem.

    Parameters
    ----------
    message:
        What went wrong, starting with the file (``"<file>: <problem>"``).
    source:
        The file, folder or reference that failed (None when not known).
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source

    def __reduce__(self):
        # Keep `source` across pickling (report workers are separate processes).
        return (type(self), (self.args[0],), {"source": self.source})


class MissingKeyError(ReadError, UnknownKeyError):
    """A configured metric key (or any training-reward key) is not in the log.

    Also a KeyError (a :class:`satmon.keys.UnknownKeyError`), as this failure always was; the
    message lists the keys the log holds and suggests close matches (``Did you mean
    'reward'?``, also in ``suggestions``), and ``str()`` is the plain message.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 available=(), suggestions=()) -> None:
        UnknownKeyError.__init__(self, message, key=key, available=available,
                                 suggestions=suggestions)
        self.source = source

    # KeyError would print the message as a quoted repr.
    __str__ = ValueError.__str__

    def __reduce__(self):
        return (_rebuild_missing_key_error,
                (self.args[0], self.source, self.key, self.available, self.suggestions))


def _rebuild_missing_key_error(message, source, key, available, suggestions):
    return MissingKeyError(message, source=source, key=key, available=available,
                           suggestions=suggestions)
