"""The command line: the README's main job, and one clear line (never a traceback) for bad input."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EDGE_MFR_STATE_DIR": os.environ.get("EDGE_MFR_STATE_DIR", "/nonexistent-state"),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_mfr.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]


def test_recognize_on_the_embedded_sample(tmp_path):
    out = tmp_path / "annotated.jpg"
    proc = run_cli("recognize", "--annotate", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "astronaut" in proc.stdout and "1 face" in proc.stdout
    assert cv2.imread(str(out)) is not None


def test_recognize_json_lists_box_score_and_landmarks():
    proc = run_cli("recognize", "--json")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    face = record["faces"][0]
    assert len(face["box"]) == 4 and face["score"] > 0.8
    assert set(face["landmarks"]) == {"right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear"}


def test_device_code_never_imports_tensorflow():
    code = ("import sys; from edge_mfr.cli import main; main(['recognize']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'picamera2', 'tools')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("notes.jpg", b"just some text", "not a readable image"),
        ("empty.png", b"", "empty file"),
        ("corrupt.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40, "not a readable image"),
        ("huge.png", _png_header(10000, 10000), "10000x10000"),
    ],
)
def test_bad_images_give_one_clear_line(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    assert_one_line_error(run_cli("recognize", str(path)), needle)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    assert_one_line_error(run_cli("recognize", str(path)), "1x1")


def test_missing_path():
    assert_one_line_error(run_cli("recognize", "no/such/file.jpg"), "no such file")


def test_model_with_the_wrong_hash_is_refused(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(REPO / "models", models)
    target = models / "face_detection_short_range.tflite"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x55
    target.write_bytes(bytes(data))
    proc = run_cli("recognize", env={"EDGE_MFR_MODELS": str(models)})
    assert_one_line_error(proc, "face_detection_short_range.tflite: sha256")


def test_enroll_people_and_recognize_round_trip(tmp_path, astronaut):
    photo = tmp_path / "eileen.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    gallery = tmp_path / "gallery.npz"
    proc = run_cli("enroll", "Eileen Collins", str(photo), "--gallery", str(gallery))
    assert proc.returncode == 0, proc.stderr
    assert "enrolled 'Eileen Collins'" in proc.stdout
    assert (gallery.stat().st_mode & 0o777) == 0o600
    listing = [json.loads(line) for line in
               run_cli("people", "list", "--json", "--gallery", str(gallery)).stdout.splitlines()]
    assert listing[0]["name"] == "Eileen Collins" and listing[0]["real"] == 1
    proc = run_cli("recognize", str(photo), "--gallery", str(gallery))
    assert "-> Eileen Collins" in proc.stdout, proc.stdout
    record = json.loads(run_cli("recognize", str(photo), "--json", "--gallery", str(gallery)).stdout)
    ident = record["faces"][0]["identity"]
    assert ident["name"] == "Eileen Collins" and ident["score"] > 0.9
    # the mask SVM's signed value beside its decision (tools/pi/compare_recognize.py tells a flip at the boundary)
    assert ident["masked"] is False and ident["mask_margin"] < 0
    assert run_cli("people", "rename", "Eileen Collins", "Eileen", "--gallery", str(gallery)).returncode == 0
    assert run_cli("people", "deny", "Eileen", "--gallery", str(gallery)).returncode == 0
    shown = json.loads(run_cli("people", "show", "Eileen", "--json", "--gallery", str(gallery)).stdout)
    assert shown["allowed"] is False
    assert run_cli("people", "remove", "Eileen", "--gallery", str(gallery)).returncode == 0
    assert "nobody enrolled" in run_cli("people", "list", "--gallery", str(gallery)).stdout


def test_enroll_and_people_use_the_gallery_the_config_gives_run(tmp_path, astronaut):
    # A config that moves the state folder: enrollment must land in the gallery `run` reads, not in the
    # environment's state folder, and `people` must list that one.
    photo = tmp_path / "eileen.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    door_state, env_state = tmp_path / "door-state", tmp_path / "env-state"
    config = tmp_path / "door.toml"
    config.write_text(f'[device]\nstate_dir = "{door_state}"\n')
    env = {"EDGE_MFR_STATE_DIR": str(env_state)}
    proc = run_cli("--config", str(config), "enroll", "Eileen Collins", str(photo), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (door_state / "gallery.npz").is_file() and not (env_state / "gallery.npz").exists()
    listing = run_cli("--config", str(config), "people", "list", "--json", env=env).stdout.splitlines()
    assert [json.loads(line)["name"] for line in listing] == ["Eileen Collins"]
    proc = run_cli("--config", str(config), "recognize", str(photo), env=env)
    assert "-> Eileen Collins" in proc.stdout, proc.stdout
    # Without a config the state folder's gallery is used, as before: nobody is enrolled there.
    assert "nobody enrolled" in run_cli("people", "list", env=env).stdout


def test_enroll_with_a_traversal_name_is_refused(tmp_path, astronaut):
    photo = tmp_path / "p.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    gallery = tmp_path / "gallery.npz"
    assert_one_line_error(run_cli("enroll", "../../etc/x", str(photo), "--gallery", str(gallery)), "name")
    assert not gallery.exists()


def test_bench_stream_mode_compares_tracker_on_and_off(tmp_path, astronaut):
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for i in range(30):
        frame = np.full((480, 640, 3), 100, np.uint8)
        head = cv2.resize(astronaut[30:250, 110:340], (230 + 3 * i, 220 + 3 * i))  # a face ~100-140 px wide
        frame[80 : 80 + head.shape[0], 180 : 180 + head.shape[1]] = head
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "stream.json"
    proc = run_cli("bench", "--source", str(video), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    on, off = report["runs"]
    assert on["frames"] == off["frames"] == 30
    assert off["embeddings"] == off["faces"] >= 25  # tracker off: every face embedded
    assert on["embeddings"] < off["embeddings"] / 2  # the tracker reuses embeddings
    assert on["peak_rss_mib"] > 0 and "tracker speed-up" in proc.stdout


@pytest.mark.data
def test_enroll_refuses_a_duplicate_in_one_line_and_same_as_adds_to_the_match(tmp_path, data_dir):
    photos = sorted((data_dir / "lfw" / "ColinPowell").glob("*.jpg"))
    gallery = str(tmp_path / "g.npz")
    fast = ("--gallery", gallery, "--no-synthetic-masks")
    first = run_cli("enroll", "Colin Powell", *map(str, photos[:3]), *fast)
    assert first.returncode == 0, first.stderr
    person_id = first.stdout.strip().splitlines()[-1].split(" as ")[1].split()[0]
    proc = run_cli("enroll", "C. Powell", *map(str, photos[3:5]), *fast)
    assert_one_line_error(proc, f"match 'Colin Powell' ({person_id}")
    added = run_cli("enroll", "C. Powell", *map(str, photos[3:5]), *fast, "--same-as", person_id)
    assert added.returncode == 0 and f"as {person_id}" in added.stdout, added.stderr
