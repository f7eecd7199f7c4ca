"""Retune's progress bar (tqdm on stderr): opened with a total that may grow later."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A progress bar over evaluations; every method is a no-op until `open`."""

    def __init__(self) -> None:
        self._bar: Any = None

    def open(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=sys.stderr, disable=not enabled, unit="eval",
                         dynamic_ncols=True, desc="retune")

    def grow(self, count: int) -> None:
        """More evaluations to do (a cluster's hardware kind joined)."""
        if self._bar is not None and count:
            self._bar.total += count
            self._bar.refresh()

    def advance(self, count: int, label: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
