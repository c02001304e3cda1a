"""The package exception: raised for corrsteer's own failures (not user mistakes).

User mistakes (wrong shapes, dtypes, values) raise ``ValueError`` or ``TypeError``;
``CorrsteerError`` means the library itself could not do what it should (an
allocation failed, a checkpoint is corrupt, a model's layers cannot be found).
"""


class CorrsteerError(RuntimeError):
    """corrsteer could not complete an operation; the message says why and what to do."""
