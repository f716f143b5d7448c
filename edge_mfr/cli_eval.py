"""`edge-mfr eval` and `eval-liveness`, and the embedder-set and gallery options the commands share.

Kept apart from cli.py so the command line stays one screenful per job; cli.py registers these.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mfr.errors import EdgeMfrError, InputNotFoundError

if TYPE_CHECKING:
    from edge_mfr.config import Config


def given_config(args: argparse.Namespace) -> Config | None:
    """The config `run` would read: --config, else /etc/edge-mfr/config.toml when present; None without one."""
    from edge_mfr.config import DEFAULT_CONFIG_PATH, load_config

    if args.config is not None or DEFAULT_CONFIG_PATH.is_file():
        return load_config(args.config)
    return None


def selected_embedders(args: argparse.Namespace) -> list[str] | None:
    """--embedders, else the config file's recognition.embedders, else None (the default set)."""
    if getattr(args, "embedders", None):
        return [n for n in args.embedders.split(",") if n]
    config = given_config(args)
    return config.recognition.embedders if config is not None else None


def selected_gallery(args: argparse.Namespace) -> Path:
    """--gallery, else the config file's recognition.gallery (the one `run` reads), else the state folder's.

    Without this, `enroll` and `people` wrote and listed the state folder's gallery even when the config
    named another one, so a person enrolled there was never seen by the door.
    """
    if getattr(args, "gallery", None):
        return Path(args.gallery)
    config = given_config(args)
    if config is not None:
        assert config.recognition.gallery is not None  # the config fills it in from device.state_dir
        return config.recognition.gallery
    from edge_mfr.paths import default_gallery

    return default_gallery()


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_mfr.eval import public_report, run_eval, summary
    from edge_mfr.plots import check_plot_dir, write_plots
    from edge_mfr.progress import StagedProgress
    from edge_mfr.vision.pipeline import FacePipeline

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise InputNotFoundError(f"{data_dir}: no such folder")
    subsets = [s for s in args.subsets.split(",") if s]
    strangers = [s for s in args.strangers.split(",") if s] if args.strangers else []
    # Every output is checked before minutes of work, and the summary is printed before the optional plots.
    if args.json:
        _check_writable_file(Path(args.json))
    if args.plots:
        check_plot_dir(Path(args.plots))
    pipeline = FacePipeline(detector=args.detector, num_threads=args.threads, models_dir=args.models,
                            embedders=selected_embedders(args))
    progress = StagedProgress("eval", units={"enrolling people": "identity", "probes": "probe",
                                             "mask status, 5-fold": "step"})
    try:
        report = run_eval(data_dir, subsets, strangers, pipeline, progress=progress,
                          models_dir=args.models)
    except BaseException:
        progress.close(failed=True)
        raise
    progress.close()
    text = public_report(report)
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(f"wrote {args.json}")
    print(summary(report))
    if args.plots:
        for path in write_plots(report, Path(args.plots)):
            print(f"wrote {path}")
    return 0


def cmd_eval_liveness(args: argparse.Namespace) -> int:
    from edge_mfr.liveness.evaluate import evaluate

    report = evaluate([Path(p) for p in args.real], [Path(p) for p in args.attack], window_s=args.window,
                      detector=args.detector, models_dir=args.models,
                      out=Path(args.json) if args.json else None)
    for clip in report["per_clip"]:
        when = "-" if clip["seconds"] is None else f"{clip['seconds']:.2f} s"
        print(f"{clip['kind']:6} {clip['decision']:8} {when:>8}  {clip['path']}: {clip['reason']}")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"APCER {fmt(report['apcer'])} ({report['attack_clips']} attack clips), "
          f"BPCER {fmt(report['bpcer'])} ({report['real_clips']} live clips), window {args.window:.1f} s")
    return 0


def _check_writable_file(path: Path) -> None:
    """Fail now, not after the work, when ``path`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EdgeMfrError(f"{path}: is a folder, not a file")
    if not parent.is_dir():
        raise InputNotFoundError(f"{parent}: no such folder for {path}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise EdgeMfrError(f"{path}: not writable")
