"""Enrollment: photos, folders or a short video scan of one person -> checked templates in the gallery.

Every frame goes through the same detector, aligner and embedder as recognition. A frame is used only
when it holds exactly one face that passes the quality checks and is not a near-duplicate of a frame
already kept; every dropped frame is reported with its reason. The kept faces must agree that they are
one person (a face that matches none of the others is dropped as an outlier; two groups are refused),
and a new person who matches someone already enrolled is refused with who it matches unless the
operator says it is that person or explicitly someone else (:mod:`edge_mfr.identity.similarity`). Each
kept crop also gets synthetic masked variants, so a person who enrolled bare-faced is still recognised
behind a mask.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.errors import DuplicatePersonError, EnrollmentError, ImageError, InputNotFoundError
from edge_mfr.identity.gallery import ExtraModel, Gallery, TemplateMeta, source_label, validate_name
from edge_mfr.identity.similarity import DUPLICATE, SAME_PERSON, agreement_groups, gallery_matches
from edge_mfr.native_output import native_chatter_to_log
from edge_mfr.vision.align import align_face, alignment_matrix, transform_points
from edge_mfr.vision.imageio import is_image_path, read_image
from edge_mfr.vision.pipeline import FacePipeline
from edge_mfr.vision.quality import QualityLimits, assess
from edge_mfr.vision.synthetic_masks import MaskStyle, render_mask, standard_styles

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".h264"})


@dataclass(frozen=True)
class EnrollOptions:
    """How enrollment samples, filters and augments. Defaults suit a 5-20 s phone video or a few photos."""

    max_video_frames: int = 40  # frames sampled evenly from a video scan
    max_templates: int = 20  # real templates kept per enrollment, best quality first
    duplicate_cosine: float = 0.97  # a frame this similar to one already kept adds nothing
    synthetic_masks: bool = True
    mask_styles: tuple[MaskStyle, ...] = field(default_factory=lambda: tuple(standard_styles()))
    quality: QualityLimits = field(default_factory=QualityLimits)
    crop_kind: str = "auto"  # how stills are detected; "aligned_crop" for dataset crops
    same_person: float = SAME_PERSON  # kept faces must agree at this group similarity (similarity.py)
    duplicate: float = DUPLICATE  # a new person matching an enrolled one at this similarity is refused


@dataclass
class Candidate:
    source: str
    crop: np.ndarray
    crop_keypoints: np.ndarray
    embedding: np.ndarray
    quality: float
    # template name -> (crop, its keypoints) for the extra embedders' alignments (cut from the frame, not
    # from ``crop``: re-sampling a crop twice blurs it).
    other_crops: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class EnrollmentResult:
    """What an enrollment kept and dropped (with reasons), and the templates it produced."""

    kept: list[Candidate] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 512), np.float32))
    # extra embedder name -> rows, one per row of ``embeddings`` (the same templates seen by that embedder)
    extra_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    metas: list[TemplateMeta] = field(default_factory=list)
    crops: list[np.ndarray | None] = field(default_factory=list)
    # set by enroll(): whether the faces went to a person already enrolled, and that person's name
    added_to_existing: bool = False
    person_name: str = ""

    def summary_lines(self) -> list[str]:
        synthetic = sum(m.synthetic for m in self.metas)
        lines = [f"kept {len(self.kept)} face(s), {synthetic} synthetic masked template(s); "
                 f"dropped {len(self.dropped)} frame(s)"]
        lines += [f"  kept    {c.source} (quality {c.quality:.2f})" for c in self.kept]
        lines += [f"  dropped {src}: {why}" for src, why in self.dropped]
        return lines


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def sample_video(path: Path, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """Evenly spaced RGB frames of a video, named ``file#frame=N``; a clear error if none can be read."""
    with native_chatter_to_log(f"opening {path}"):  # FFmpeg's notes on a bad file
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise EnrollmentError(f"{path}: cannot open video (corrupt or unsupported format)")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, total // max_frames) if total > 0 else 1
        index = read = 0
        while read < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                read += 1
                yield source_label(path, index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise EnrollmentError(f"{path}: no frame could be decoded (corrupt or empty video)")
    finally:
        capture.release()


def expand_inputs(paths: Iterable[Path | str], options: EnrollOptions) -> Iterator[tuple[str, Callable]]:
    """(source label, loader) per still image or sampled video frame, in a reproducible order."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if p.is_file() and (is_image_path(p) or is_video_path(p))]
            if not files:
                raise EnrollmentError(f"{path}: folder holds no images or videos")
        else:
            files = [path]
        for f in files:
            if is_video_path(f):
                for label, frame in sample_video(f, options.max_video_frames):
                    yield label, (lambda fr=frame: fr)
            else:
                yield source_label(f), (lambda p=f: read_image(p))


def collect_candidates(pipeline: FacePipeline, inputs: Iterable[tuple[str, Callable]], options: EnrollOptions,
                       result: EnrollmentResult, progress: Callable[[], None] | None = None) -> list[Candidate]:
    """Detect, check and embed every input frame; drops go into ``result.dropped``."""
    candidates: list[Candidate] = []
    for label, load in inputs:
        if progress:
            progress()
        try:
            image = load()
        except ImageError as exc:
            result.dropped.append((label, str(exc).split(": ", 1)[-1]))
            continue
        is_frame = "#frame=" in label
        faces = pipeline.detect(image, crop_kind="photo" if is_frame else options.crop_kind)
        if len(faces) != 1:
            result.dropped.append((label, "no face found" if not faces else f"{len(faces)} faces (need exactly one)"))
            continue
        face = faces[0]
        analyzed = pipeline.analyze_faces(image, [face])[0]
        quality = assess(face, analyzed.crop)
        problems = quality.problems(options.quality)
        if problems:
            result.dropped.append((label, "; ".join(problems)))
            continue
        crop_kps = transform_points(face.keypoints, alignment_matrix(face))
        others = {}
        for template in {e.template for e in pipeline.extra_embedders}:
            others[template] = (align_face(image, face, template=template),
                                transform_points(face.keypoints, alignment_matrix(face, template=template)))
        candidates.append(Candidate(label, analyzed.crop, crop_kps, analyzed.embedding, quality.overall, others))
    return candidates


def select(candidates: list[Candidate], options: EnrollOptions, result: EnrollmentResult) -> list[Candidate]:
    """Best quality first; drop near-duplicates and anything beyond ``max_templates``."""
    kept: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.quality):
        if kept:
            best = max(float(cand.embedding @ k.embedding) for k in kept)
            if best >= options.duplicate_cosine:
                result.dropped.append((cand.source, f"near-duplicate of a kept frame (cosine {best:.3f})"))
                continue
        if len(kept) >= options.max_templates:
            result.dropped.append((cand.source, f"more than {options.max_templates} good frames; lower quality"))
            continue
        kept.append(cand)
    return kept


def check_agreement(kept: list[Candidate], options: EnrollOptions, result: EnrollmentResult) -> list[Candidate]:
    """Keep the one group of faces that agree; drop lone outliers with a reason, refuse two groups.

    Photos of two people under one name would let both open the door as that name, so an enrollment
    whose faces split into two groups of two or more is refused naming both groups' sources.
    """
    if len(kept) < 2:
        return kept
    groups = agreement_groups(np.stack([c.embedding for c in kept]), options.same_person)
    if len(groups[0]) < 2:
        raise EnrollmentError(f"the {len(kept)} faces do not agree that they are one person "
                              f"({', '.join(c.source for c in kept)}); enroll each person separately")
    if len(groups) > 1 and len(groups[1]) >= 2:
        def names(group: list[int]) -> str:
            return ", ".join(kept[i].source for i in group)

        raise EnrollmentError(f"the faces form {sum(len(g) >= 2 for g in groups)} groups that look like "
                              f"different people: [{names(groups[0])}] and [{names(groups[1])}]; "
                              "enroll each person separately")
    main = set(groups[0])
    for i, cand in enumerate(kept):
        if i not in main:
            result.dropped.append((cand.source, "does not look like the same person as the other faces"))
    return [c for i, c in enumerate(kept) if i in main]


def style_name(style: MaskStyle) -> str:
    return f"{style.kind}-{style.texture}-{style.color[0]:02x}{style.color[1]:02x}{style.color[2]:02x}"


def build_templates(pipeline: FacePipeline, kept: list[Candidate], options: EnrollOptions,
                    result: EnrollmentResult) -> None:
    """Real templates plus, per kept crop, one synthetic masked template per mask style."""
    assert pipeline.embedder is not None
    embeddings: list[np.ndarray] = []
    for cand in kept:
        embeddings.append(cand.embedding)
        result.metas.append(TemplateMeta(source=cand.source, quality=cand.quality))
        result.crops.append(cand.crop)
        if not options.synthetic_masks:
            continue
        rng = np.random.default_rng(zlib.crc32(cand.source.encode()))  # reproducible per source
        masked = [render_mask(cand.crop, cand.crop_keypoints, style, rng) for style in options.mask_styles]
        if masked:
            embeddings.extend(pipeline.embedder.embed(np.stack(masked)))
        for style in options.mask_styles:
            result.metas.append(TemplateMeta(source=cand.source, quality=cand.quality, synthetic=True,
                                             mask_style=style_name(style), masked=True))
            result.crops.append(None)
    result.kept = kept
    result.embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, pipeline.embedder.dim)
    for emb in pipeline.extra_embedders:
        rows = []
        for cand in kept:
            crop, kps = cand.other_crops[emb.template]
            rows.append(crop)
            if options.synthetic_masks:
                rng = np.random.default_rng(zlib.crc32(cand.source.encode()))  # the same masks as above
                rows += [render_mask(crop, kps, style, rng) for style in options.mask_styles]
        result.extra_embeddings[emb.name] = emb.embed(np.stack(rows)).reshape(-1, emb.dim)


def prepare_enrollment(pipeline: FacePipeline, paths: Iterable[Path | str], options: EnrollOptions | None = None,
                       progress: Callable[[], None] | None = None) -> EnrollmentResult:
    """Everything up to (not including) the gallery write; raises EnrollmentError when nothing is usable."""
    options = options or EnrollOptions()
    result = EnrollmentResult()
    inputs = list(expand_inputs(paths, options))
    if not inputs:
        raise EnrollmentError("nothing to enroll from: no images or video frames given")
    candidates = collect_candidates(pipeline, inputs, options, result, progress)
    kept = check_agreement(select(candidates, options, result), options, result)
    if not kept:
        reasons = "; ".join(f"{s}: {w}" for s, w in result.dropped[:5])
        raise EnrollmentError(f"no usable face in {len(inputs)} frame(s) ({reasons})")
    build_templates(pipeline, kept, options, result)
    return result


def check_not_enrolled(gallery: Gallery, result: EnrollmentResult, target: str | None,
                       different_from: Iterable[str], threshold: float) -> None:
    """Refuse faces that match an enrolled person other than ``target``, unless the operator named that
    person in ``different_from`` (id or name): enrolling someone twice under two names makes both
    "too close to another person", so the real person could no longer open the door."""
    confirmed = {d.casefold() for d in different_from}
    real = np.stack([c.embedding for c in result.kept])
    for match in gallery_matches(real, [p for p in gallery.people if p.person_id != target], threshold):
        if match.person_id.casefold() in confirmed or match.name.casefold() in confirmed:
            continue
        raise DuplicatePersonError(
            f"these faces match {match.name!r} ({match.person_id}, similarity {match.score:.2f}), who is already "
            f"enrolled: to add them to that person use --same-as {match.person_id} (kiosk: tick 'add to a person "
            f"already enrolled' with that name); if this is someone else, say so with --different-from "
            f"{match.person_id} (kiosk: 'Different from')", person_id=match.person_id, name=match.name,
            score=float(match.score))


def enroll(gallery_path: Path, name: str, paths: Iterable[Path | str], pipeline: FacePipeline,
           options: EnrollOptions | None = None, *, add_to_existing: bool = False, allowed: bool = True,
           keep_crops: bool = False, progress: Callable[[], None] | None = None, same_as: str | None = None,
           different_from: Iterable[str] = ()) -> tuple[str, EnrollmentResult]:
    """Enroll ``name`` into the gallery file; returns (person_id, result). The file is untouched on error.

    ``same_as`` (a person id or name) adds the faces to that enrolled person whatever ``name`` says;
    ``different_from`` lists enrolled people the operator confirms this is not, so a match with them
    does not refuse the enrollment.
    """
    name = validate_name(name)
    options = options or EnrollOptions()
    different_from = tuple(different_from)
    assert pipeline.embedder is not None
    extras = extra_models(pipeline)
    # Check the gallery (models, integrity, name) before the slow part, so a doomed run fails fast.
    if Path(gallery_path).exists():
        existing = Gallery.load(gallery_path, pipeline.embedder.model_sha256, with_crops=False,
                                extra_models=[(m.name, m.sha256) for m in extras])
        if not add_to_existing and same_as is None and any(p.name.casefold() == name.casefold()
                                                           for p in existing.people):
            raise EnrollmentError(f"{name!r} is already enrolled; use --add to add images to that person")
        if same_as is not None:
            existing.get(same_as)  # a clear "no such person" before the slow part
    result = prepare_enrollment(pipeline, paths, options, progress)
    with Gallery.edit(gallery_path, pipeline.embedder.model_sha256, dim=pipeline.embedder.dim,
                      keep_crops=keep_crops, extra_models=extras) as gallery:
        person = None
        if same_as is not None:
            person = gallery.get(same_as)
        elif add_to_existing:
            try:
                person = gallery.get(name)
            except LookupError:
                person = None
        check_not_enrolled(gallery, result, person.person_id if person else None, different_from,
                           options.duplicate)
        result.added_to_existing = person is not None
        if person is None:
            person = gallery.add_person(name, allowed=allowed)
        result.person_name = person.name
        gallery.add_templates(person.person_id, result.embeddings, result.metas, crops=result.crops,
                              extra=result.extra_embeddings)
    return person.person_id, result


def extra_models(pipeline: FacePipeline) -> list[ExtraModel]:
    """The gallery's description of the pipeline's extra embedders."""
    return [ExtraModel(e.name, e.model_sha256, e.dim) for e in pipeline.extra_embedders]


def reembed(gallery_path: Path, pipeline: FacePipeline) -> int:
    """Re-embed every template of a gallery that kept its crops with the current model; returns the count.

    Synthetic templates are re-rendered on the kept real crop they came from (its keypoints found again
    by the detector on the aligned crop), with the same mask style. The extra embedders' templates are cut
    from the kept crop with their own alignment. All or nothing: on any error the file stays as it was.
    """
    from edge_mfr.errors import GalleryError
    from edge_mfr.vision.faces import best_face

    assert pipeline.embedder is not None
    styles = {style_name(s): s for s in standard_styles()}
    with Gallery.edit(gallery_path, None, create=False) as gallery:
        if not gallery.keep_crops:
            raise GalleryError(f"{gallery_path}: this gallery kept no face crops; re-enroll everyone instead")
        new: dict[str, np.ndarray] = {}
        extras = extra_models(pipeline)
        extra_new: dict[str, dict[str, np.ndarray]] = {m.name: {} for m in extras}
        for person in gallery.people:
            real = {t.source: c for t, c in zip(person.templates, person.crops, strict=True)
                    if not t.synthetic and c is not None}
            rows = []
            other_rows: dict[str, list[np.ndarray]] = {e.name: [] for e in pipeline.extra_embedders}
            for template, crop in zip(person.templates, person.crops, strict=True):
                if not template.synthetic:
                    if crop is None:
                        raise GalleryError(f"{person.person_id}: template {template.source!r} has no kept crop")
                    rows.append(crop)
                    if pipeline.extra_embedders:
                        face = _face_in_crop(pipeline, crop, person.person_id, template.source)
                        for e in pipeline.extra_embedders:
                            other_rows[e.name].append(align_face(crop, face, template=e.template))
                    continue
                base = real.get(template.source)
                style = styles.get(template.mask_style or "")
                if base is None or style is None:
                    raise GalleryError(f"{person.person_id}: cannot re-render synthetic template "
                                       f"{template.source!r} ({template.mask_style})")
                face = best_face(pipeline.detect(base, crop_kind="aligned_crop"), base.shape)
                if face is None:
                    raise GalleryError(f"{person.person_id}: no face found again in the kept crop of "
                                       f"{template.source!r}")
                rng = np.random.default_rng(zlib.crc32(template.source.encode()))
                rows.append(render_mask(base, face.keypoints, style, rng))
                for e in pipeline.extra_embedders:
                    rng = np.random.default_rng(zlib.crc32(template.source.encode()))
                    kps = transform_points(face.keypoints, alignment_matrix(face, template=e.template))
                    other_rows[e.name].append(render_mask(align_face(base, face, template=e.template), kps, style,
                                                          rng))
            new[person.person_id] = pipeline.embedder.embed(np.stack(rows)) if rows else np.zeros((0, 512))
            for e in pipeline.extra_embedders:
                extra_new[e.name][person.person_id] = (e.embed(np.stack(other_rows[e.name])) if rows
                                                       else np.zeros((0, e.dim), np.float32))
        gallery.replace_embeddings(pipeline.embedder.model_sha256, new, dim=pipeline.embedder.dim,
                                   extra_models=extras, extra_new=extra_new)
        return sum(len(v) for v in new.values())


def _face_in_crop(pipeline: FacePipeline, crop: np.ndarray, person_id: str, source: str):
    """The face of a kept aligned crop, found again by the detector (its keypoints drive the other alignments)."""
    from edge_mfr.errors import GalleryError
    from edge_mfr.vision.faces import best_face

    face = best_face(pipeline.detect(crop, crop_kind="aligned_crop"), crop.shape)
    if face is None:
        raise GalleryError(f"{person_id}: no face found again in the kept crop of {source!r}")
    return face
