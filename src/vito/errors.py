"""User-facing errors: bad input the user can fix. The CLI prints them without a traceback."""


class VitoError(Exception):
    """Base class for errors caused by input (files, data, arguments, configs), not by bugs."""


class DataError(VitoError):
    """Unusable data: no readable video, a missing file named in a manifest, a malformed dataset layout."""
