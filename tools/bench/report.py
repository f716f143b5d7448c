"""The comparison as a Markdown table, a JSON file and a PNG bar chart, with baseline / edge-mfr ratios.

Every ratio is "baseline cost / edge-mfr cost" (milliseconds, MiB, seconds, or 1 / throughput), so a
ratio of 8 reads "the baseline needs 8x what edge-mfr needs".
"""

from __future__ import annotations

import math
from pathlib import Path

from tools.bench.systems import LABELS

SHORT = {"edge-mfr": "edge-mfr", "seed": "seed-style", "dlib": "dlib"}


def _speed(report: dict, system: str, threads: int) -> dict | None:
    for r in report["speed"]:
        if r.get("system") == system and r.get("threads") == threads and "error" not in r:
            return r
    return None


SPEED_ROWS = [
    # (label, getter, kind) kind "cost": higher is worse; "rate": higher is better
    ("frame latency median (ms)", lambda r: r["frame"]["median_ms"], "cost"),
    ("frame latency p95 (ms)", lambda r: r["frame"]["p95_ms"], "cost"),
    ("folder images/s", lambda r: r["folder"]["images_per_s"], "rate"),
    ("video stream fps", lambda r: r["video"]["fps"], "rate"),
    ("video faces embedded per frame", lambda r: r["video"]["faces"] / max(r["video"]["frames"], 1), "info"),
    ("peak RSS (MiB)", lambda r: r["peak_rss_mib"], "cost"),
    ("cold start to first result (s)", lambda r: r["cold_start_s"], "cost"),
]

ACCURACY_ROWS = [
    ("masked rank-1", lambda a: a["masked_rank1"]),
    ("masked TAR @ FAR 1e-3", lambda a: a["masked_tar_at_far_1e-3"]),
    ("masked TAR @ FAR 1e-2", lambda a: a["masked_tar_at_far_1e-2"]),
    ("unmasked rank-1", lambda a: a["unmasked_rank1"]),
    ("unmasked TAR @ FAR 1e-3", lambda a: a["unmasked_tar_at_far_1e-3"]),
    ("accept correct (own operating point)", lambda a: a["open_set"]["accept_correct"]),
    ("accept wrong (own operating point)", lambda a: a["open_set"]["accept_wrong"]),
    ("stranger accepted (own operating point)", lambda a: a["open_set"]["stranger_accepted"]),
    ("probes with no face found", lambda a: a["no_face_total"]),
]


def ratio(base: float | None, edge: float | None, kind: str) -> float | None:
    if kind == "info" or base is None or edge is None or base <= 0 or edge <= 0:
        return None
    return base / edge if kind == "cost" else edge / base


def add_ratios(report: dict) -> None:
    """report["ratios"][baseline][threads][metric] = baseline cost / edge-mfr cost."""
    out: dict = {}
    for base in report["systems"]:
        if base == "edge-mfr":
            continue
        for t in report["threads"]:
            e, b = _speed(report, "edge-mfr", t), _speed(report, base, t)
            if not e or not b:
                continue
            for label, get, kind in SPEED_ROWS:
                r = ratio(get(b), get(e), kind)
                out.setdefault(base, {}).setdefault(str(t), {})[label] = None if r is None else round(r, 2)
    report["ratios"] = out


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    systems = report["systems"]
    bases = [s for s in systems if s != "edge-mfr"]
    lines = [
        f"Measured {report['date']} on {m['host']}: {m['cpu']}, {m['cpus_available']} CPU(s) available"
        f"{' (shared with other jobs)' if m.get('shared_note') else ''}; Python {m['python']}."
        f"{' QUICK MODE: a handful of images, not a result.' if report['quick'] else ''}",
        "",
        f"Speed: {report['frame_desc']}; each system in its own process pinned to N CPUs with its thread "
        f"pools set to N; warm-up excluded; folder `{report['folder_desc']}`, video `{report['video_desc']}`.",
        "",
    ]
    head = "| metric | threads | " + " | ".join(SHORT[s] for s in systems)
    head += "".join(f" | {SHORT[b]} / edge-mfr" for b in bases) + " |"
    lines += [head, "|---|---|" + "---|" * (len(systems) + len(bases))]
    for label, get, kind in SPEED_ROWS:
        for t in report["threads"]:
            cells = []
            for s in systems:
                r = _speed(report, s, t)
                cells.append(_fmt(get(r), 1 if kind == "cost" and "ms" in label else 2) if r else "n/a")
            for b in bases:
                cells.append(_fmt(report["ratios"].get(b, {}).get(str(t), {}).get(label), 1) + "x"
                             if report["ratios"].get(b, {}).get(str(t), {}).get(label) is not None else "n/a")
            lines.append(f"| {label} | {t} | " + " | ".join(cells) + " |")
    odd = sorted({f"{SHORT[r['system']]} {r['faces_in_frame']}" for r in report["speed"]
                  if "error" not in r and r["faces_in_frame"] != 1})
    if odd:
        lines += ["", "Warning: the latency frame should show one face, but some systems found another number "
                  "(system faces): " + ", ".join(odd) + "."]
    acc = report["accuracy"]
    lines += [
        "",
        f"Accuracy: EVALUATION.md protocol on `{report['data_desc']}` (`--subsets {','.join(report['subsets'])} "
        f"--strangers {','.join(report['strangers'])}`); {_counts(acc)}. Stills with no clean face are padded "
        "with a black border of half the long side and detected again (edge-mfr's rule, applied to all).",
        "",
        "| metric | " + " | ".join(SHORT[s] for s in systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for label, get in ACCURACY_ROWS:
        cells = []
        for s in systems:
            a = acc.get(s)
            cells.append(_fmt(get(a), 3) if a and "error" not in a else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for sname in systems:
        alt = acc.get(sname, {}).get("alt_rule")
        if alt:
            lines += ["", f"{SHORT[sname]}, same embeddings scored by {alt['rule']}:"
                      f" masked rank-1 {_fmt(alt['masked_rank1'], 3)}, masked TAR @ FAR 1e-3 "
                      f"{_fmt(alt['masked_tar_at_far_1e-3'], 3)}, unmasked rank-1 {_fmt(alt['unmasked_rank1'], 3)}."]
    lines += ["", "Systems: " + "; ".join(f"{SHORT[s]} = {LABELS[s]}" for s in systems) + "."]
    errors = [f"{k}: {v['error']}" for k, v in acc.items() if "error" in v]
    errors += [f"{r['system']} {r['threads']}t: {r['error']}" for r in report["speed"] if "error" in r]
    if errors:
        lines += ["", "Failed: " + "; ".join(errors)]
    return "\n".join(lines)


def _counts(acc: dict) -> str:
    for a in acc.values():
        if "counts" in a:
            c = a["counts"]
            return (f"{c['enrolled_identities']} people enrolled, {c['masked_probes']} masked, "
                    f"{c['unmasked_probes']} unmasked and {c['stranger_probes']} stranger probes")
    return "no counts"


def chart(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = report["systems"]
    colours = {"edge-mfr": "#2b8a3e", "seed": "#e8590c", "dlib": "#1c7ed6"}
    panels = [(label, get) for label, get, kind in SPEED_ROWS if "p95" not in label and kind != "info"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (label, get) in zip(axes.flat, panels, strict=False):
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            vals = []
            for t in report["threads"]:
                r = _speed(report, s, t)
                v = get(r) if r else None
                vals.append(v if v is not None else 0.0)
            xs = [k + i * width for k in range(len(report["threads"]))]
            bars = ax.bar(xs, vals, width, label=SHORT[s], color=colours[s])
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks([k + width * (len(systems) - 1) / 2 for k in range(len(report["threads"]))])
        ax.set_xticklabels([f"{t} thread{'s' if t > 1 else ''}" for t in report["threads"]])
        ax.set_title(label, fontsize=10)
    ax = axes.flat[len(panels)]
    acc_rows = ACCURACY_ROWS[:4] + ACCURACY_ROWS[7:8]
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        a = report["accuracy"].get(s, {})
        vals = [get(a) if "error" not in a and a else 0.0 for _, get in acc_rows]
        bars = ax.bar([k + i * width for k in range(len(acc_rows))], vals, width, label=SHORT[s], color=colours[s])
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks([k + width * (len(systems) - 1) / 2 for k in range(len(acc_rows))])
    ax.set_xticklabels(["masked\nrank-1", "masked\nTAR@1e-3", "masked\nTAR@1e-2", "unmasked\nrank-1",
                        "stranger\naccepted"], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_title("accuracy (EVALUATION.md)", fontsize=10)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"edge-mfr vs baselines on {report['machine']['cpu']} ({report['date']})"
                 f"{' - QUICK' if report['quick'] else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
