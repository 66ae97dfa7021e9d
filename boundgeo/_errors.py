"""The one exception type that user-caused errors raise."""


class BoundgeoError(ValueError):
    """Raised for bad input a user can fix; the message names the offending shape or value."""
