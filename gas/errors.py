"""The one exception type users see: its message is a single line that says what is wrong."""


class GasError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


class GenomeError(GasError):
    """A genome breaks a rule; the message names the first broken rule and where it is."""
