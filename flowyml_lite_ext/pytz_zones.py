"""The ``pytz`` zone provider (extra: ``pip install 'flowyml-lite[pytz]'``).

For applications that already carry pytz zones. The zone layer only converts instants with
``astimezone``, which pytz implements correctly, so the fire instants equal zoneinfo's.
"""

from __future__ import annotations

from datetime import tzinfo

import pytz  # ImportError here: the registry names the extra

from flowyml_lite.errors import UnknownTimezoneError
from flowyml_lite.timezones import suggest_zone_names


class PytzProvider:
    """Zones from pytz's bundled tz database (registered as ``pytz``)."""

    name = "pytz"

    def get(self, key: str) -> tzinfo:
        """The pytz zone named ``key``; an unknown name raises UnknownTimezoneError with close names."""
        if not isinstance(key, str) or not key.strip():
            raise UnknownTimezoneError(str(key))
        try:
            zone: tzinfo = pytz.timezone(key)
            return zone
        except (pytz.UnknownTimeZoneError, ValueError):
            pass
        raise UnknownTimezoneError(key, suggest_zone_names(key, list(pytz.all_timezones))) from None


__all__ = ["PytzProvider"]
