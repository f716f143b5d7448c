"""Who was seen in a video: a tally over its frames, for the summary `edge-mfr recognize VIDEO` ends with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SeenTally:
    """Frames per identified person (with the best similarity) and frames with an unknown face."""

    frames: dict[str, int] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    unknown_frames: int = 0

    def add(self, records: list[dict]) -> None:
        """One frame's face records (``identity`` present when a gallery was used)."""
        names = {r["identity"]["name"] for r in records if r.get("identity") and r["identity"]["name"]}
        for r in records:
            ident = r.get("identity")
            if ident and ident["name"]:
                self.best[ident["name"]] = max(self.best.get(ident["name"], -1.0), float(ident["score"]))
        for name in names:
            self.frames[name] = self.frames.get(name, 0) + 1
        self.unknown_frames += any(r.get("identity") and not r["identity"]["name"] for r in records)

    def lines(self, identified: bool) -> list[str]:
        """The summary: who, in how many frames, most seen first."""
        if not identified:
            return ["faces only: nobody is enrolled (edge-mfr enroll NAME PHOTOS) or --no-identify was given"]
        if not self.frames and not self.unknown_frames:
            return ["nobody seen"]
        out = [f"seen: {name} in {n} frame{'s' if n != 1 else ''} (best similarity {self.best[name]:.2f})"
               for name, n in sorted(self.frames.items(), key=lambda kv: (-kv[1], kv[0]))]
        if self.unknown_frames:
            out.append(f"unknown faces in {self.unknown_frames} frame{'s' if self.unknown_frames != 1 else ''}")
        return out
