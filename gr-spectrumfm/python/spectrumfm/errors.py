"""Errors that reach the user as one line (the `spectrumfm` command prints them and exits 2)."""


class InputError(Exception):
    """Bad input from the user: a missing or malformed file, a bad parameter, an unknown device.

    The message names the input and the problem, e.g.
    ``"capture.cf32: no sample rate (give --samp-rate)"``.
    """


class RadioError(Exception):
    """A radio that cannot be reached or stops delivering: an rtl_tcp server that is not
    listening, or goes away mid-stream; a USB radio that stops giving samples.

    The message names the radio and what happened, e.g.
    ``"rtl_tcp 10.0.0.5:1234: connection refused (is rtl_tcp running there?)"``;
    `spectrumfm run` prints it as one line and exits 3.
    """
