"""The kiosk's text for people: one readable local time format, a journal filter that names mask_status,
an admin link big enough for a finger (no browser needed: the pages are rendered on the server)."""

from __future__ import annotations

import re

from edge_mfr.interfaces.kiosk.pages import journal_page, live_page
from edge_mfr.timefmt import local_time

ROW = {"ts": "2026-12-01T06:10:20.123456+00:00", "kind": "access_granted", "door": "front", "person_id": "ada",
       "details": "score=0.9"}


def test_journal_times_are_local_and_readable():
    html = journal_page([ROW], ["access_granted", "mask_status"], {})
    assert "2026-12-01T06:10:20.123456" not in html
    assert f"<td>{local_time(ROW['ts'])}</td>" in html
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", local_time(ROW["ts"]))
    assert "Time (UTC)" not in html


def test_journal_filter_offers_mask_status_and_says_the_default_hides_it():
    html = journal_page([], ["access_granted", "mask_status"], {"kind": "mask_status"})
    assert "<option value=''>all but mask_status</option>" in html
    assert "<option selected>mask_status</option>" in html


def test_admin_link_is_a_button_sized_link():
    assert "class=admin-link" in live_page(True) and "class=small><a href='/admin'" not in live_page(True)
    assert "admin" not in live_page(False).lower().replace("admin pages", "")


def test_local_time_leaves_odd_values_readable():
    assert local_time(None) == "-" and local_time("not a time") == "not a time"


def test_journal_rows_hide_mask_status_unless_it_is_the_kind_asked_for(tmp_path):
    from types import SimpleNamespace

    from edge_mfr.device.journal import Journal
    from edge_mfr.interfaces.kiosk.handler import JOURNAL_KINDS
    from edge_mfr.interfaces.kiosk.server import Kiosk

    assert "mask_status" in JOURNAL_KINDS  # it can be chosen in the filter
    with Journal(tmp_path / "journal.db") as journal:
        journal.record("access_granted", door="front", person_id="ada")
        for _ in range(3):
            journal.record("mask_status", door="front", masked=True)
        settings = SimpleNamespace(admin_password_file=None, stream_width=640, max_upload_mb=5, bind="127.0.0.1")
        kiosk = Kiosk(SimpleNamespace(journal=journal), settings)
        assert [r["kind"] for r in kiosk.journal_rows({})] == ["access_granted"]
        assert [r["kind"] for r in kiosk.journal_rows({"kind": "mask_status"})] == ["mask_status"] * 3
