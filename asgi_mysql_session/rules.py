"""The lifetime and size rules of sessions, as one object the store and the table share.

Pure arithmetic on the clock: no I/O, so the rules a session follows can be read (and
tested) apart from the SQL that enforces them on the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import SessionConfigError

#: The largest session the data column holds (MEDIUMBLOB).
DATA_COLUMN_BYTES = 2**24 - 1

Clock = Callable[[], float]


@dataclass(eq=False)
class Rules:
    """How long a session lives, when its deadline moves, and how big it may be.

    ``max_lifetime``: idle seconds until a session ends; ``absolute_lifetime``: seconds
    since creation after which it ends whatever its activity (None: no bound; below
    ``max_lifetime`` is allowed, the absolute bound then simply wins); ``touch_after``:
    how far the deadline must move before an unmodified session is written again (None:
    a tenth of ``max_lifetime``); ``rotation_grace``: how long a rotated-away id is
    remembered as superseded; ``max_size``: the largest encoded session;
    ``write_retries``: merges tried when concurrent writers conflict.
    """

    max_lifetime: int = 3600
    absolute_lifetime: int | None = 86400
    touch_after: int | None = None
    rotation_grace: int = 300
    max_size: int = 65536
    write_retries: int = 10
    clock: Clock = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        if self.max_lifetime < 1:
            raise SessionConfigError("max_lifetime must be at least 1 second")
        if self.absolute_lifetime is not None and self.absolute_lifetime < 1:
            raise SessionConfigError("absolute_lifetime must be None or at least 1 second")
        if self.rotation_grace < 0:
            raise SessionConfigError("rotation_grace must be >= 0 seconds")
        if not 1 <= self.max_size <= DATA_COLUMN_BYTES:
            raise SessionConfigError(f"max_size must be between 1 and {DATA_COLUMN_BYTES}")
        if self.touch_after is None:
            self.touch_after = max(1, self.max_lifetime // 10)
        if not 0 <= self.touch_after <= self.max_lifetime:
            raise SessionConfigError("touch_after must be between 0 and max_lifetime")
        if self.write_retries < 0:
            raise SessionConfigError("write_retries must be >= 0")

    @property
    def touch_step(self) -> int:
        """``touch_after`` as set (it is filled in at creation)."""
        return self.touch_after or 0

    def now(self) -> int:
        return int(self.clock())

    def born_after(self, now: int) -> int:
        """Rows created at or before this are past the absolute lifetime (0: no bound)."""
        absolute = self.absolute_lifetime
        return max(now - absolute, 0) if absolute is not None else 0

    def cap(self, created: int) -> int | None:
        """The absolute deadline of a session created at ``created``, if there is one.

        0 means unknown (a row written by something else, e.g. mid-upgrade): only the idle
        lifetime applies to it, rather than a cap in 1970 that would end it on its next write.
        """
        if self.absolute_lifetime is None or created == 0:
            return None
        return created + self.absolute_lifetime

    def deadline(self, created: int, now: int) -> int:
        """Idle deadline from now, capped by the absolute lifetime since creation."""
        cap = self.cap(created)
        return now + self.max_lifetime if cap is None else min(now + self.max_lifetime, cap)
