"""Long commands show progress in a log too: plain lines at every tenth of the work, none on the clock."""

from __future__ import annotations

import io

from edge_mfr.progress import Progress, StagedProgress


def test_log_progress_writes_a_line_per_tenth_and_a_closing_line():
    out = io.StringIO()
    with Progress("eval: probes", 40, "probe", stream=out, tty=False) as bar:
        for _ in range(40):
            bar.update()
    lines = out.getvalue().splitlines()
    assert lines[0] == "eval: probes: started (40 probes)"
    assert lines[1] == "eval: probes: 4/40 probes (10%)"
    assert len(lines) == 1 + 9 + 1  # started, 10%..90%, done
    assert lines[-1] == "eval: probes: done, 40 probes"


def test_log_progress_without_a_total_writes_every_n_items():
    out = io.StringIO()
    with Progress("enroll", None, "frame", stream=out, tty=False, every=5) as bar:
        bar.update(12)
        bar.update(3)
    assert out.getvalue().splitlines() == ["enroll: started", "enroll: 15 frames", "enroll: done, 15 frames"]


def test_units_are_counted_in_plain_english():
    out = io.StringIO()
    with Progress("eval", 2, "identity", stream=out, tty=False) as bar:
        bar.update(2)
    assert out.getvalue().splitlines() == ["eval: started (2 identities)", "eval: done, 2 identities"]


def test_staged_progress_opens_one_progress_per_stage():
    out = io.StringIO()
    hook = StagedProgress("eval", stream=out, tty=False)
    for i in range(1, 3):
        hook("enrolling people", i, 2)
    hook("probes", 1, 1)
    hook.close()
    assert out.getvalue().splitlines() == [
        "eval: enrolling people: started (2 items)", "eval: enrolling people: 1/2 items (50%)",
        "eval: enrolling people: done, 2 items", "eval: probes: started (1 item)", "eval: probes: done, 1 item"]


def test_a_failed_step_does_not_say_done():
    out = io.StringIO()
    try:
        with Progress("enroll Ada", None, "image", stream=out, tty=False) as bar:
            bar.update(3)
            raise ValueError("no face")
    except ValueError:
        pass
    assert out.getvalue().splitlines()[-1] == "enroll Ada: stopped after 3 images"
