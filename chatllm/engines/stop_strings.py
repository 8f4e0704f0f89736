"""Stop strings on a stream of text pieces: hold back what may start one, cut at the first full match."""

from __future__ import annotations

from typing import Sequence


class StopFilter:
    """Holds back text that might be the start of a stop string, and cuts at the first full match."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` that is safe to show now (none once a stop string has matched)."""
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        """Whatever was held back, at the end of the generation."""
        out, self.pending = self.pending, ""
        return out
