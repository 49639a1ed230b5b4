"""The exception types whose message is meant for the user (the CLI prints it, no traceback)."""


class UserError(Exception):
    """Something the user can fix: the message says what was wrong and how to fix it."""


class DamagedFile(UserError):
    """A file that exists but cannot be read back as what it should be (truncated, bit-flipped, foreign).
    Caches move such a file aside and recompute it; a file the user named is reported."""

    def __init__(self, message: str, path) -> None:
        super().__init__(message)
        self.path = path
