"""The `edge-mfr` command line.

Every expected failure (bad image, bad model file, bad gallery, bad config) is an EdgeMfrError and is
printed as one line with exit code 2; a traceback means a bug. EXIT_RULES below is the whole rule, shown
in `--help`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge_mfr import __version__
from edge_mfr.cli_eval import cmd_eval, cmd_eval_liveness
from edge_mfr.cli_eval import selected_embedders as _embedders
from edge_mfr.cli_eval import selected_gallery as _gallery
from edge_mfr.errors import EdgeMfrError, ImageError, InputNotFoundError
from edge_mfr.identity.seen import SeenTally
from edge_mfr.interfaces.fleet import commands as fleet_commands
from edge_mfr.native_output import native_chatter_to_log
from edge_mfr.progress import Progress
from edge_mfr.vision.samples import SAMPLE_NAME, sample_image

log = logging.getLogger("edge_mfr")

ERROR_PREFIX = "edge-mfr: error: "
EXIT_RULES = """exit status:
  0    done
  1    done, and the answer is no: a check found problems (config check, doctor) or the demo's door misbehaved
  2    bad input or usage: nothing, or only the good inputs, processed; one line per problem on stderr,
       each starting "edge-mfr: error: "
  130  interrupted (Ctrl-C)
  141  stdout was closed early (| head): stopped quietly
output:
  results go to stdout, progress and errors to stderr; --json on stdout is JSON lines (one object per line),
  --json OUT (eval, bench) writes one JSON document to the file OUT
"""

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
def iter_inputs(paths: list[str]) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) for every image named or found under a named folder."""
    from edge_mfr.vision.imageio import list_images, read_image

    if not paths:
        yield SAMPLE_NAME, sample_image
        return
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = list_images(path)
            if not images:
                raise InputNotFoundError(f"{path}: folder holds no image files")
            for image in images:
                yield str(image), (lambda p=image: read_image(p))
        elif path.exists():
            yield str(path), (lambda p=path: read_image(p))
        else:
            raise InputNotFoundError(f"{path}: no such file or folder")


def _face_record(face, index: int) -> dict:
    return {
        "index": index,
        "box": [round(float(v), 1) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": {n: [round(float(x), 1), round(float(y), 1)]
                      for n, (x, y) in zip(KEYPOINT_NAMES, face.keypoints, strict=True)},
    }


def cmd_recognize(args: argparse.Namespace) -> int:
    from edge_mfr.identity.enroll import is_video_path
    from edge_mfr.vision.draw import draw_faces
    from edge_mfr.vision.imageio import write_image
    from edge_mfr.vision.pipeline import FacePipeline

    videos = [Path(p) for p in args.paths if Path(p).is_file() and is_video_path(Path(p))]
    stills = [p for p in args.paths if Path(p) not in videos]
    inputs = list(iter_inputs(stills)) if stills or not videos else []
    many = len(inputs) + len(videos) > 1
    gallery_path = _gallery(args)
    use_gallery = gallery_path.exists() and not args.no_identify
    if args.gallery and not gallery_path.exists():
        raise InputNotFoundError(f"{gallery_path}: no gallery file (enroll someone first)")
    pipeline = FacePipeline(detector=args.detector, num_threads=args.threads, models_dir=args.models,
                            embed=use_gallery, embedders=_embedders(args))
    identifier = None
    if use_gallery:
        from edge_mfr.identity.identify import Identifier

        identifier = Identifier.from_files(gallery_path, pipeline.embedder_ids, args.models)
    annotate = Path(args.annotate) if args.annotate else None
    if annotate and many:
        annotate.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, load in inputs:
        try:
            image = load()
        except ImageError as exc:
            print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
            failures += 1
            continue
        faces = pipeline.detect(image, crop_kind=args.crop_kind)
        records = [_face_record(f, i + 1) for i, f in enumerate(faces)]
        labels = _identify_records(pipeline, identifier, image, faces, records)
        if args.json:
            print(json.dumps({"image": name, "faces": records}))
        else:
            print(f"{name}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for r in records:
                lm = " ".join(f"{k}=({v[0]:.0f},{v[1]:.0f})" for k, v in r["landmarks"].items())
                box = ",".join(f"{v:.0f}" for v in r["box"])
                print(f"  face {r['index']}: box {box} score {r['score']:.2f} {lm}")
                if "identity" in r:
                    ident = r["identity"]
                    who = ident["name"] or "unknown"
                    print(f"    -> {who} (similarity {ident['score']:.2f}, {'masked' if ident['masked'] else 'no mask'}"
                          f"{'' if ident['name'] else '; ' + ident['reason']})")
        if annotate:
            target = annotate
            if many:
                target = annotate / (Path(name).stem + "_annotated.jpg")
            write_image(target, draw_faces(image, faces, labels))
    for video in videos:
        target = None
        if annotate:
            target = annotate / f"{video.stem}_annotated{'.avi' if video.suffix.lower() == '.avi' else '.mp4'}" \
                if many else annotate
        try:
            _recognize_video(video, target, pipeline, identifier, args)
        except ImageError as exc:
            print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
            failures += 1
    if annotate and not args.json:
        print(f"annotated output written to {annotate}")
    return 2 if failures else 0  # bad input, as when it is the only input (EXIT_RULES)


def _identify_records(pipeline, identifier, image, faces, records) -> list | None:
    """Identify ``faces`` (adding an ``identity`` to each record); their labels, or None without a gallery."""
    if identifier is None:
        return None
    ids = (identifier.identify(pipeline.analyze_faces(image, faces),
                               lambda fs, masked, extra: pipeline.embed_for_identity(image, fs, masked, extra))
           if faces else [])
    for r, i in zip(records, ids, strict=True):
        r["identity"] = {"person_id": i.decision.person_id, "name": i.name, "score": round(i.decision.score, 4),
                         "margin": round(i.decision.margin, 4), "masked": i.masked,
                         "mask_margin": round(i.mask_probability_margin, 4),  # the SVM's value: > 0 masked
                         "candidate": i.decision.candidate_id, "reason": i.decision.reason}
    return [_label(i) for i in ids]


def _recognize_video(path: Path, target: Path | None, pipeline, identifier, args: argparse.Namespace) -> None:
    """Every frame of a video, judged on its own; with ``target``, the same frames annotated (the drawing of
    still images) as a video there: MJPEG for .avi, MPEG-4 otherwise."""
    import cv2

    from edge_mfr.vision.draw import draw_faces
    from edge_mfr.vision.imageio import rgb_frames

    with native_chatter_to_log(f"opening {path}"):  # FFmpeg's "moov atom not found" for a bad file
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageError(f"{path}: cannot open video (corrupt or unsupported format)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and 0 < fps <= 240 else 10.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    crop_kind = "photo" if args.crop_kind == "auto" else args.crop_kind  # video frames are scenes, not crops
    writer, frames, with_faces = None, 0, 0
    seen = SeenTally()
    progress = Progress(f"recognize {path.name}", total, "frame")
    failed = True
    try:
        for image in rgb_frames(capture):
            faces = pipeline.detect(image, crop_kind=crop_kind)
            records = [_face_record(f, i + 1) for i, f in enumerate(faces)]
            labels = _identify_records(pipeline, identifier, image, faces, records)
            seen.add(records)
            if args.json:
                print(json.dumps({"image": f"{path}#frame={frames}", "faces": records}))
            if target is not None:
                if writer is None:
                    fourcc = "MJPG" if target.suffix.lower() == ".avi" else "mp4v"
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*fourcc), fps,
                                             (image.shape[1], image.shape[0]))
                    if not writer.isOpened():
                        raise ImageError(f"{target}: cannot write a video there (use .mp4 or .avi, and a "
                                         "writable folder)")
                writer.write(cv2.cvtColor(draw_faces(image, faces, labels), cv2.COLOR_RGB2BGR))
            frames += 1
            with_faces += bool(faces)
            progress.update()
        failed = False
    finally:
        progress.close(failed)
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise ImageError(f"{path}: no frame could be decoded (corrupt or empty video)")
    if not args.json:
        print(f"{path}: {frames} frames, faces in {with_faces}")
        for line in seen.lines(identifier is not None):
            print(f"  {line}")


def _label(ident):
    from edge_mfr.vision.draw import GREEN, RED, Label

    mask = " (mask)" if ident.masked else ""
    if ident.name:
        return Label(f"{ident.name} {ident.decision.score:.2f}{mask}", GREEN)
    return Label(f"unknown{mask}", RED)


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge_mfr.identity.enroll import EnrollOptions, enroll
    from edge_mfr.identity.gallery import validate_name
    from edge_mfr.vision.pipeline import FacePipeline

    validate_name(args.name)  # before loading any model
    gallery = _gallery(args)
    options = EnrollOptions(synthetic_masks=not args.no_synthetic_masks, max_video_frames=args.max_frames,
                            crop_kind=args.crop_kind)
    pipeline = FacePipeline(detector=args.detector, num_threads=args.threads, models_dir=args.models,
                            embedders=_embedders(args))
    with Progress(f"enroll {args.name}", None, "image", every=10) as bar:  # a video frame counts as one
        person_id, result = enroll(gallery, args.name, args.paths, pipeline, options, add_to_existing=args.add,
                                   allowed=not args.denied, keep_crops=args.keep_crops, progress=bar.update,
                                   same_as=args.same_as, different_from=args.different_from)
    for line in result.summary_lines():
        print(line)
    _refresh_svm(gallery, pipeline.embedder_ids, args.models)
    who = f"added to {args.same_as!r}" if args.same_as else f"enrolled {args.name!r}"
    print(f"{who} as {person_id} in {gallery}")
    return 0


def _refresh_svm(gallery_path: Path, embedder_ids: list[tuple[str, str]], models_dir: Path | None) -> None:
    """Refit the persisted SVM now, so the daemon finds fresh weights instead of fitting them itself."""
    from edge_mfr.identity.classifier import IdentityClassifier
    from edge_mfr.identity.fusion import load_fusion
    from edge_mfr.identity.gallery import Gallery
    from edge_mfr.identity.svm import cache_path

    gallery = Gallery.load(gallery_path, embedder_ids[0][1], with_crops=False, extra_models=embedder_ids[1:])
    x, labels, metas = gallery.matrix()
    if not len(x):
        return
    extra = gallery.extra_matrices()
    fusion = load_fusion(embedder_ids, models_dir) if extra else None
    rows = {(fusion.embedders[0] if fusion else "embedding"): x, **extra}
    IdentityClassifier().fit(rows, labels, np.array([m.synthetic for m in metas], dtype=bool),
                             svm_cache=cache_path(gallery_path), fusion=fusion)


def _embedder_ids(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, sha256) of the selected embedders from the manifest, without loading any model."""
    from edge_mfr.vision.embedder import DEFAULT_EMBEDDERS
    from edge_mfr.vision.runtime import find_model

    return [(n, find_model("embedder", args.models, n)[1].sha256) for n in _embedders(args) or DEFAULT_EMBEDDERS]


def cmd_people(args: argparse.Namespace) -> int:
    from edge_mfr.identity.gallery import Gallery
    from edge_mfr.identity.people_view import people_table, person_record, person_summary

    gallery_path = _gallery(args)
    if args.action == "list":
        g = Gallery.load(gallery_path, None, with_crops=False) if gallery_path.exists() else None
        rows = g.summary() if g else []
        if args.json:  # JSON lines, one person per line, as every --json on stdout (EXIT_RULES)
            for r in rows:
                print(json.dumps(r, ensure_ascii=False))
            return 0
        if not rows:
            print(f"nobody enrolled ({gallery_path})")
            return 0
        print(people_table(rows))
        return 0
    if not args.person and args.action != "reembed":
        raise EdgeMfrError(f"people {args.action}: name or id of the person is required")
    if args.action == "show":
        g = Gallery.load(gallery_path, None, with_crops=False)
        p = g.get(args.person)
        print(json.dumps(person_record(p), ensure_ascii=False) if args.json else person_summary(p))
        return 0
    if args.action == "reembed":
        from edge_mfr.identity.enroll import reembed
        from edge_mfr.vision.pipeline import FacePipeline

        pipeline = FacePipeline(num_threads=2, models_dir=args.models, embedders=_embedders(args))
        count = reembed(gallery_path, pipeline)
        _refresh_svm(gallery_path, pipeline.embedder_ids, args.models)
        names = ", ".join(e.name for e in pipeline.embedders)
        print(f"re-embedded {count} templates in {gallery_path} with {names}")
        return 0
    with Gallery.edit(gallery_path, None, create=False) as g:
        p = g.get(args.person)
        if args.action == "rename":
            if not args.new_name:
                raise EdgeMfrError("people rename: the new name is required")
            g.rename(p.person_id, args.new_name)
            print(f"renamed {p.person_id}: {p.name!r} -> {args.new_name!r}")
        elif args.action == "remove":
            g.remove(p.person_id)
            print(f"removed {p.person_id} ({p.name})")
        elif args.action in ("allow", "deny"):
            g.set_allowed(p.person_id, args.action == "allow")
            print(f"{p.person_id} ({p.name}) is now {'allowed' if args.action == 'allow' else 'denied'}")
    if args.action == "remove":
        _refresh_svm(gallery_path, _embedder_ids(args), args.models)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from edge_mfr.config_safety import config_check

    lines = config_check(args.config)
    for line in lines:
        print(line)
    fatal = [line for line in lines if not line.startswith("warning: ")]
    if not lines:
        print(f"{args.config or 'default configuration'}: ok")
    return 1 if fatal else 0


def cmd_events(args: argparse.Namespace) -> int:
    from edge_mfr.config import load_config
    from edge_mfr.device.journal_view import events_command

    return events_command(load_config(args.config).journal.path, args.kind, args.since, args.limit, args.json)


def cmd_lockout(args: argparse.Namespace) -> int:
    from edge_mfr.config import load_config
    from edge_mfr.device.journal import Journal
    from edge_mfr.device.lockouts import active_lockouts, record_clear

    cfg = load_config(args.config)
    doors = [d.name for d in cfg.doors]
    if args.door is not None and args.door not in doors:
        raise EdgeMfrError(f"no door called {args.door!r}; doors: {', '.join(doors)}")
    with Journal.from_config(cfg, readonly=args.action == "status") as journal:
        active = {d: s for d, s in active_lockouts(journal).items() if args.door in (None, d)}
        if args.action == "clear":
            record_clear(journal, args.door, by="cli")
            what = f"door {args.door!r}" if args.door else "every door"
            print(f"lockout cleared for {what}" + ("" if active else " (none was active)")
                  + "; a running service applies it within a second")
            return 0
    for door, seconds in sorted(active.items()):
        print(f"{door}: locked out for {seconds:.0f} s more")
    if not active:
        print("no lockout active")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge_mfr.app import run_command

    return run_command(args.config, source=args.source, max_frames=args.max_frames, models_dir=args.models,
                       realtime=args.realtime)


def cmd_relock(args: argparse.Namespace) -> int:
    from edge_mfr.app import relock_command

    return relock_command(args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_mfr.demo import run_demo

    return run_demo(Path(args.out) if args.out else None, models_dir=args.models)


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_mfr.doctor import run_doctor

    return run_doctor(args.config, models_dir=args.models, camera_timeout=args.camera_timeout)


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_mfr.bench import run_bench, run_stream_bench

    if args.source:
        source = Path(args.source)
        if not source.is_file():
            raise InputNotFoundError(f"{source}: no such video file")
        threads = int(str(args.threads).split(",")[0])
        gallery = Path(args.gallery) if args.gallery else None
        report = run_stream_bench(source, threads=threads, gallery=gallery, viewer=args.viewer,
                                  embedders=_embedders(args))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        print(report["table"])
        return 0

    report = run_bench(detector=args.detector, threads=args.threads, iterations=args.iterations,
                       models_dir=args.models, image_path=args.image, embedders=_embedders(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(report["table"])
    return 0


def _config_option(p: argparse.ArgumentParser) -> None:
    """``--config`` after the subcommand too (as the example file and habit put it); it wins over the one before."""
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="configuration file (as before the "
                                                                          "subcommand)")


class _Parser(argparse.ArgumentParser):
    """argparse with the one error prefix of EXIT_RULES (argparse's own is "edge-mfr SUBCOMMAND: error:")."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{ERROR_PREFIX}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-mfr", description=__doc__.splitlines()[0].rstrip("."), epilog=EXIT_RULES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-mfr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with the TFLite models and manifest.json (default: bundled models/)")
    parser.add_argument("--config", type=Path, default=None,
                        help="configuration file (default: /etc/edge-mfr/config.toml when present)")
    parser.add_argument("--embedders", default=None,
                        help="comma separated embedding models, FaceNet first (default: the config's "
                             "recognition.embedders)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("recognize", help="find (and, with a gallery, identify) faces in images or videos")
    p.add_argument("paths", nargs="*", help="image files, folders or video files (default: the embedded sample "
                                            "photo)")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--crop-kind", default="auto", choices=["auto", "photo", "aligned_crop"],
                   help="'aligned_crop' for tight face crops such as MFR2; 'auto' tries both")
    p.add_argument("--threads", type=int, default=1, help="TFLite threads (default 1)")
    p.add_argument("--annotate", metavar="OUT", help="write the image (or video) with boxes to OUT (a folder "
                                                     "for many)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.set_defaults(func=cmd_recognize)

    p.add_argument("--gallery", help="gallery file (default: the state folder's gallery.npz, if any)")
    p.add_argument("--no-identify", action="store_true", help="only detect, even when a gallery exists")

    p = sub.add_parser("enroll", help="enroll a person from photos, a folder or a short video scan")
    p.add_argument("name", help="display name of the person")
    p.add_argument("paths", nargs="+", help="image files, folders or video files")
    p.add_argument("--gallery", help="gallery file (default: the state folder's gallery.npz)")
    p.add_argument("--add", action="store_true", help="add these images to an already enrolled person")
    p.add_argument("--same-as", metavar="PERSON",
                   help="these faces are PERSON (id or name), already enrolled: add them to that person")
    p.add_argument("--different-from", metavar="PERSON", action="append", default=[],
                   help="this is not PERSON (id or name), although the faces match them: enroll anyway "
                        "(repeat for several)")
    p.add_argument("--denied", action="store_true", help="recognise this person but never open the door")
    p.add_argument("--keep-crops", action="store_true",
                   help="store aligned face crops in a new gallery so it can be re-embedded after a model change")
    p.add_argument("--no-synthetic-masks", action="store_true", help="skip the synthetic masked templates")
    p.add_argument("--max-frames", type=int, default=40, help="frames sampled from a video scan")
    p.add_argument("--crop-kind", default="auto", choices=["auto", "photo", "aligned_crop"])
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("people", help="list, show, rename, remove, allow or deny people; reembed after a model change")
    p.add_argument("action", choices=["list", "show", "rename", "remove", "allow", "deny", "reembed"])
    p.add_argument("person", nargs="?", help="id or name")
    p.add_argument("new_name", nargs="?", help="for rename")
    p.add_argument("--gallery", help="gallery file (default: the state folder's gallery.npz)")
    p.add_argument("--json", action="store_true", help="list: one JSON line per person; show: one JSON line with "
                                                       "every template")
    p.set_defaults(func=cmd_people)

    p = sub.add_parser("eval", help="accuracy protocol of EVALUATION.md on a labelled folder")
    p.add_argument("data_dir", help="folder with labels.csv, e.g. ../shared/data")
    p.add_argument("--subsets", required=True, help="comma separated subsets whose people are enrolled")
    p.add_argument("--strangers", default="", help="comma separated subsets used as strangers")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--plots", metavar="DIR", help="write score distribution and DET plots (PNG) to DIR")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-liveness", help="APCER/BPCER of the blink check on live and attack clips")
    p.add_argument("--real", nargs="*", default=[], metavar="CLIP", help="live presentations (videos or folders)")
    p.add_argument("--attack", nargs="*", default=[], metavar="CLIP", help="attack presentations")
    p.add_argument("--json", metavar="OUT", help="write apcer, bpcer and per_clip as JSON")
    p.add_argument("--window", type=float, default=4.0, help="seconds a face has to blink (default 4)")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.set_defaults(func=cmd_eval_liveness)

    p = sub.add_parser("config", help="check a configuration file and print every problem precisely")
    p.add_argument("action", choices=["check"])
    _config_option(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("events", help="list the journal's recent decisions and lock actions")
    p.add_argument("--kind", help="comma separated event kinds")
    p.add_argument("--since", help="ISO time or a span such as 30m, 2h, 7d")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    _config_option(p)
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("lockout", help="show or clear a lockout (too many unknown faces at a door)")
    p.add_argument("action", choices=["status", "clear"])
    p.add_argument("--door", help="only this door (default: every door)")
    p.set_defaults(func=cmd_lockout)

    p = sub.add_parser("run", help="the appliance: camera -> recognition -> door lock (systemd's ExecStart)")
    p.add_argument("--source", metavar="SPEC", help="override camera.source: picamera2, /dev/video0, a URL, "
                                                    "a video file, an image folder or 'synthetic'")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (tests)")
    p.add_argument("--realtime", action="store_true", help="replay a video file at its own frame rate")
    _config_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("relock", help="drive every door's relay to locked and exit (systemd's ExecStopPost, after "
                                      "any end of `run`, SIGKILL included)")
    p.set_defaults(func=cmd_relock)

    p = sub.add_parser("demo", help="the whole appliance on a rendered clip: no Pi, camera or broker needed")
    p.add_argument("--out", metavar="DIR", help="folder for the clip, gallery and journal (default: a new "
                                                "temporary folder, kept and printed)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="check config, models, runtime, gallery, camera, GPIO, journal, broker")
    p.add_argument("--camera-timeout", type=float, default=5.0, help="seconds to wait for a camera frame")
    _config_option(p)
    p.set_defaults(func=cmd_doctor)

    fleet_commands.add_parser(sub)

    p = sub.add_parser("bench", help="per-stage latency, fps, memory and load time on this machine")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--threads", default="1,2", help="thread counts to measure, comma separated")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--image", type=Path, help="a photo with one face (default: the embedded sample)")
    p.add_argument("--source", help="a video: stream fps of the real loop with the tracker on and off, peak RSS")
    p.add_argument("--gallery", help="with --source: gallery to recognise against (default: nobody enrolled)")
    p.add_argument("--viewer", action="store_true",
                   help="with --source: also measure the loop's fps with one kiosk MJPEG viewer connected")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if os.environ.get("INVOCATION_ID")
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is met inside this try and not at interpreter exit
        return code
    except EdgeMfrError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        for problem in problems:
            print(f"{ERROR_PREFIX}{problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as other Unix tools do, and keep the interpreter's
        # final flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
