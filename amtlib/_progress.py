"""A one-line progress bar on stderr (no dependency): jobs done, failures, best objective."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import TextIO

from amtlib.records import ObjectiveStatus, ObjectiveType, TrainingJob


class ProgressBar:
    """Redraws ``[#####.....] 12/50 jobs  failed 1  best 0.1234`` in place, at most 10 times a second.

    Args:
        total: the number of training jobs the bar fills up to.
        objective_type: which way "best" goes.
        enabled: draw at all; ``None`` means when the stream is a terminal.
        stream: where to draw (stderr by default).
    """

    def __init__(
        self,
        total: int,
        objective_type: ObjectiveType,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.sign = -1.0 if objective_type is ObjectiveType.MAXIMIZE else 1.0
        self.done = self.failed = 0
        self.best: float | None = None
        self._last_draw = 0.0
        self._drawn = False

    def add(self, jobs: Iterable[TrainingJob]) -> None:
        """Count finished jobs (call once per job, when it finishes)."""
        for job in jobs:
            if not job.is_finished():
                continue
            self.done += 1
            value = job.objective_value
            if job.objective_status is not ObjectiveStatus.SUCCEEDED or value is None:
                self.failed += 1
            elif self.best is None or self.sign * value < self.sign * self.best:
                self.best = value
        if self.enabled and time.monotonic() - self._last_draw >= 0.1:
            self.draw()

    def draw(self) -> None:
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        shown = "-" if self.best is None else f"{self.best:.6g}"
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} jobs"
            f"  failed {self.failed}  best {shown}"
        )
        self.stream.flush()
        self._last_draw = time.monotonic()
        self._drawn = True

    def close(self) -> None:
        if self.enabled:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
