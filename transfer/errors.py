"""The one exception type whose message is meant for the user (the CLI prints it, no traceback)."""


class UserError(Exception):
    """Something the user can fix: the message says what was wrong and how to fix it."""
