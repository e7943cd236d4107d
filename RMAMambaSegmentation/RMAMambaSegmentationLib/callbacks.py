"""The callback types shared by the volume pipeline, the MRML logic and the background runner."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(fraction_done, message)``, fraction in [0, 1].
ProgressCallback = Callable[[float, str], None]
#: ``cancel() -> True`` to stop at the next batch boundary.
CancelCheck = Callable[[], bool]
