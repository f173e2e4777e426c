"""Errors that reach the user as one line (the `spectrumfm` command prints them and exits 2)."""


class InputError(Exception):
    """Bad input from the user: a missing or malformed file, a bad parameter, an unknown device.

    The message names the input and the problem, e.g.
    ``"capture.cf32: no sample rate (give --samp-rate)"``.
    """
