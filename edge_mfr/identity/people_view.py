"""What `edge-mfr people list` and `people show` print: aligned tables and a short summary for people,
JSON for programs (no embeddings: those are biometric data and stay in the gallery file)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from edge_mfr.timefmt import local_time


def people_table(rows: list[dict[str, Any]]) -> str:
    """``Gallery.summary()`` rows as a table whose columns fit the longest value (long names included)."""
    header = ("id", "name", "allowed", "real", "synthetic")
    table = [header] + [(r["person_id"], r["name"], "yes" if r["allowed"] else "no", str(r["real"]),
                         str(r["synthetic"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {3, 4}
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in table)


def person_record(person) -> dict[str, Any]:
    """Everything `people show --json` gives about one person (template metadata, never embeddings)."""
    return {"person_id": person.person_id, "name": person.name, "allowed": person.allowed,
            "created_at": person.created_at, "updated_at": person.updated_at,
            "templates": [{"source": t.source, "synthetic": t.synthetic, "mask_style": t.mask_style,
                           "quality": t.quality, "enrolled_at": t.enrolled_at} for t in person.templates]}


def person_summary(person) -> str:
    """A few lines for a person at a terminal: who, whether allowed, what the templates come from."""
    templates = person.templates
    real = [t for t in templates if not t.synthetic]
    synthetic = [t for t in templates if t.synthetic]
    sources = Counter(t.source.split("#")[0] for t in real)
    # Style names end in their colour (surgical-pleats-8abade): the kind of mask is what a reader wants.
    styles = Counter(re.sub(r"-[0-9a-f]{6}$", "", t.mask_style or "mask") for t in synthetic)
    quality = [t.quality for t in real]
    lines = [f"{person.name} ({person.person_id})",
             f"  allowed:    {'yes' if person.allowed else 'no (recognised, never let in)'}",
             f"  enrolled:   {local_time(person.created_at)}, last changed {local_time(person.updated_at)}",
             f"  templates:  {len(templates)}: {len(real)} from photos or video frames, {len(synthetic)} "
             "synthetic-masked"]
    if quality:
        lines.append(f"  quality:    {min(quality):.2f}-{max(quality):.2f}")
    shown = sources.most_common(5)
    lines.append("  sources:    " + ", ".join(f"{s} ({n})" if n > 1 else s for s, n in shown)
                 + (f", and {len(sources) - len(shown)} more" if len(sources) > len(shown) else ""))
    if styles:
        lines.append("  masks:      " + ", ".join(f"{s} ({n})" for s, n in sorted(styles.items())))
    lines.append("  (--json lists every template)")
    return "\n".join(lines)
