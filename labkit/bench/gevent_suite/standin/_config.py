"""Stand-in for ``gevent._config``, reduced to what gevent's testing helpers
import from it (``validate_bool``, used by ``gevent.testing.util``).

Part of the gevent-suite runner's stand-in, never part of labkit itself.
"""


def validate_bool(value) -> bool:
    """``1/true/on/yes`` -> True, ``0/false/off/no/''`` -> False (any case);
    another string is a ValueError; anything else is ``bool(value)``."""
    if isinstance(value, str):
        value = value.lower().strip()
        if value in ("1", "true", "on", "yes"):
            value = True
        elif value in ("0", "false", "off", "no") or not value:
            value = False
        else:
            raise ValueError(f"Invalid boolean string: {value!r}")
    return bool(value)
