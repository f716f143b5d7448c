"""The kiosk's HTML, CSS and JavaScript, as Python strings so they ship inside the package without data-file
configuration. Pages are rendered on the server with every value escaped; the one script only polls JSON
and writes text (never HTML), so the strict Content-Security-Policy of kiosk.py holds.
"""

from __future__ import annotations

from html import escape
from typing import Any

from edge_mfr.timefmt import local_time

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, sans-serif; background: #111; color: #eee; }
a { color: #8cf; }
#banner { font-size: 5vh; font-weight: 700; text-align: center; padding: 2vh 1vw; background: #333; }
#banner.welcome { background: #1f7a3a; } #banner.unknown, #banner.denied { background: #a3261c; }
#banner.lockout { background: #8a5a00; } #banner.open { background: #1f5f7a; }
#banner.blink { background: #5b3f8c; }
.live { display: flex; gap: 1vw; padding: 1vw; }
.live img { flex: 3; max-width: 75vw; max-height: 78vh; object-fit: contain; background: #000; }
.side { flex: 1; font-size: 2.2vh; }
.side dt { color: #aaa; } .side dd { margin: 0 0 1vh 0; font-size: 3vh; }
#events { list-style: none; padding: 0; margin: 0; font-size: 1.8vh; }
#events li { border-bottom: 1px solid #333; padding: 0.4vh 0; }
.admin { max-width: 1100px; margin: 0 auto; padding: 16px; }
.admin table { border-collapse: collapse; width: 100%; margin: 8px 0 24px; }
.admin td, .admin th { border-bottom: 1px solid #444; padding: 6px; text-align: left; vertical-align: top; }
.admin form.inline { display: inline; }
.admin input, .admin button, .admin select { font-size: 1rem; padding: 4px 8px; }
.admin section { border: 1px solid #444; padding: 8px 16px; margin: 16px 0; }
.error { background: #a3261c; color: #fff; padding: 10px; font-weight: 600; }
.ok { background: #1f7a3a; color: #fff; padding: 10px; font-weight: 600; }
nav a { margin-right: 16px; }
.small { color: #aaa; font-size: 0.85em; }
.admin-link { display: inline-block; margin: 0 1vw 1vh; padding: 1.2vh 2.4vw; font-size: 2.4vh;
  border: 1px solid #8cf; border-radius: 6px; text-decoration: none; }
"""

JS = """
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);

  function text(el, value) { if (el) el.textContent = value; }

  function renderStatus(s) {
    const banner = $("banner");
    banner.textContent = s.banner.text;
    banner.className = s.banner.kind;
    text($("lock"), s.lock);
    text($("fps"), s.fps.toFixed(1));
    text($("frames"), String(s.frames));
    text($("people"), String(s.people));
    const list = $("events");
    if (list) {
      list.replaceChildren();
      for (const e of s.events) {
        const li = document.createElement("li");
        li.textContent = e.time + "  " + e.text;
        list.appendChild(li);
      }
    }
  }

  async function pollStatus() {
    try {
      const r = await fetch("/api/status", { cache: "no-store" });
      if (r.ok) renderStatus(await r.json());
    } catch (err) {
      text($("banner"), "No connection to the appliance");
    }
    setTimeout(pollStatus, 500);
  }

  function keepStreaming(img) {
    // An MJPEG stream ends when the appliance restarts: reconnect instead of freezing on the last frame.
    const again = () => { img.src = "/stream.mjpg?t=" + Date.now(); };
    img.addEventListener("error", () => setTimeout(again, 2000));
  }

  function reportRows(table, rows) {
    table.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const cell of row) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
  }

  async function pollCapture() {
    const box = $("capture-status");
    try {
      const r = await fetch("/admin/capture/status", { cache: "no-store" });
      const s = await r.json();
      box.textContent = s.message;
      box.className = s.state === "failed" ? "error" : (s.state === "done" ? "ok" : "");
      if (s.report) reportRows($("capture-report"), s.report);
      if (s.state === "done" || s.state === "failed") return;
    } catch (err) {
      box.textContent = "lost the connection to the appliance";
    }
    setTimeout(pollCapture, 700);
  }

  if ($("banner")) pollStatus();
  if ($("live")) keepStreaming($("live"));
  if ($("capture-status")) pollCapture();
})();
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<link rel=stylesheet href='/static/kiosk.css'></head>"
            f"<body>{body}<script src='/static/kiosk.js'></script></body></html>")


def live_page(admin_enabled: bool) -> str:
    # A finger-sized button on a touch screen, not a footnote link.
    admin = "<p><a class=admin-link href='/admin'>Admin</a></p>" if admin_enabled else ""
    body = ("<div id=banner class=idle>Connecting...</div><div class=live>"
            "<img id=live src='/stream.mjpg' alt='live camera view'>"
            "<dl class=side><dt>Door</dt><dd id=lock>-</dd><dt>Frames per second</dt><dd id=fps>-</dd>"
            "<dt>Frames</dt><dd id=frames>-</dd><dt>People enrolled</dt><dd id=people>-</dd>"
            f"<dt>Last events</dt><dd><ul id=events></ul></dd></dl></div>{admin}")
    return page("edge-mfr kiosk", body)


def message(text: str, ok: bool = False) -> str:
    kind, role = ("ok", "status") if ok else ("error", "alert")
    return f"<p class={kind} role={role} id=message>{escape(text)}</p>"


CSRF_SLOT = "__EDGE_MFR_CSRF__"  # filled with the session's token by the handler (see _Handler._send)


def admin_page(title: str, content: str, note: str = "") -> str:
    nav = ("<nav><a href='/'>Live view</a><a href='/admin'>People</a><a href='/admin/journal'>Journal</a>"
           "<form class=inline method=post action='/admin/logout'>"
           f"<input type=hidden name=csrf value='{CSRF_SLOT}'><button>Log out</button></form></nav>")
    return page(title, f"<div class=admin>{nav}<h1>{escape(title)}</h1>{note}{content}</div>")


def login_page(note: str = "") -> str:
    form = ("<form method=post action='/admin/login'><label>Admin password "
            "<input type=password name=password id=password autofocus required></label> "
            "<button id=login>Log in</button></form>")
    return page("Admin login", f"<div class=admin><h1>Admin login</h1>{note}{form}"
                               "<p><a href='/'>Back to the live view</a></p></div>")


def hidden(csrf: str) -> str:
    return f"<input type=hidden name=csrf value='{escape(csrf)}'>"


def people_page(rows: list[dict[str, Any]], csrf: str, max_upload_mb: float, note: str = "") -> str:
    lines = []
    for r in rows:
        pid = escape(r["person_id"])
        allowed = "yes" if r["allowed"] else "no"
        toggle = "deny" if r["allowed"] else "allow"
        lines.append(
            f"<tr data-person='{pid}'><td class=name>{escape(r['name'])}</td><td>{pid}</td><td>{allowed}</td>"
            f"<td>{r['real']} real, {r['synthetic']} synthetic</td><td>"
            f"<form class=inline method=post action='/admin/people/rename'>{hidden(csrf)}"
            f"<input type=hidden name=person value='{pid}'><input name=name placeholder='new name' required>"
            "<button>Rename</button></form> "
            f"<form class=inline method=post action='/admin/people/{toggle}'>{hidden(csrf)}"
            f"<input type=hidden name=person value='{pid}'><button>{toggle.capitalize()}</button></form> "
            f"<form class=inline method=post action='/admin/people/remove'>{hidden(csrf)}"
            f"<input type=hidden name=person value='{pid}'><button class=remove>Remove</button></form>"
            "</td></tr>")
    table = ("<table id=people><tr><th>Name</th><th>Id</th><th>Allowed</th><th>Templates</th><th></th></tr>"
             + "".join(lines) + "</table>") if rows else "<p id=people>Nobody is enrolled yet.</p>"
    enroll = (
        "<section><h2>Enroll from photos or a short video</h2>"
        "<form method=post action='/admin/enroll' enctype='multipart/form-data' id=enroll-form>"
        f"{hidden(csrf)}"
        "<p><label>Name <input name=name id=enroll-name required maxlength=64></label></p>"
        "<p><input type=file name=files id=enroll-files multiple accept='image/*,video/*' required></p>"
        "<p><label><input type=checkbox name=allowed value=1 checked> may open the door</label> "
        "<label><input type=checkbox name=add value=1> add to a person already enrolled</label></p>"
        "<p><label>Different from <input name=different_from id=enroll-different-from maxlength=200 "
        "placeholder='id or name'></label> <span class=small>only when the faces match someone enrolled who "
        "is not this person (the page says who)</span></p>"
        f"<p class=small>Photos with one face each, or a 5-20 s video turning the head slowly; at most "
        f"{max_upload_mb:g} MB in all. Files are checked by decoding them.</p>"
        "<button id=enroll-submit>Enroll</button></form></section>"
        "<section><h2>Enroll from the live camera</h2>"
        f"<form method=post action='/admin/capture'>{hidden(csrf)}"
        "<p><label>Name <input name=name required maxlength=64></label> "
        "<label><input type=checkbox name=allowed value=1 checked> may open the door</label> "
        "<label><input type=checkbox name=add value=1> add to a person already enrolled</label></p>"
        "<p class=small>The person stands alone in front of the camera and turns the head slowly left and "
        "right while good frames are collected.</p><button>Start capture</button></form></section>"
        "<section><h2>Lockout</h2>"
        f"<form method=post action='/admin/lockout/clear'>{hidden(csrf)}"
        "<p class=small>After too many unknown faces at the door nobody is let in for a while; end that "
        "now (journalled).</p><button id=clear-lockout>Clear lockout</button></form></section>")
    return admin_page("People", table + enroll, note)


def enroll_result_page(name: str, person_id: str, kept: list[tuple[str, float]],
                       dropped: list[tuple[str, str]], synthetic: int) -> str:
    rows = [f"<tr><td>kept</td><td>{escape(s)}</td><td>quality {q:.2f}</td></tr>" for s, q in kept]
    rows += [f"<tr><td>dropped</td><td>{escape(s)}</td><td>{escape(why)}</td></tr>" for s, why in dropped]
    note = message(f"Enrolled {name} as {person_id}: kept {len(kept)} face(s), {synthetic} synthetic masked "
                   f"template(s); dropped {len(dropped)} frame(s). The door recognises them within seconds.",
                   ok=True)
    report = "<h2>Quality report</h2><table id=report>" + "".join(rows) + "</table>"
    return admin_page("Enrollment", report, note)


def capture_page() -> str:
    body = ("<img id=live src='/stream.mjpg' alt='live camera view' style='max-width:100%'>"
            "<p id=capture-status>starting...</p><table id=capture-report></table>")
    return admin_page("Enroll from the live camera", body)


def journal_page(rows: list[dict[str, Any]], kinds: list[str], query: dict[str, str], note: str = "") -> str:
    # No kind chosen lists everything but mask_status (one row per face seen, it drowns the rest).
    options = "<option value=''>all but mask_status</option>" + "".join(
        f"<option{' selected' if query.get('kind') == k else ''}>{escape(k)}</option>" for k in kinds)
    since, person = escape(query.get("since", "")), escape(query.get("person", ""))
    limit = escape(query.get("limit", "100"))
    form = ("<form method=get action='/admin/journal'>"
            f"<label>Kind <select name=kind>{options}</select></label> "
            f"<label>Since <input name=since placeholder='1h, 7d or 2024-05-01' value='{since}'></label> "
            f"<label>Person id <input name=person value='{person}'></label> "
            f"<label>Limit <input name=limit type=number min=1 max=1000 value='{limit}'></label> "
            "<button>Filter</button></form>")
    lines = [f"<tr><td>{escape(local_time(r['ts']))}</td><td>{escape(r['kind'])}</td><td>{escape(r['door'] or '')}</td>"
             f"<td>{escape(r['person_id'] or '')}</td><td>{escape(r['details'])}</td></tr>" for r in rows]
    head = "".join(f"<th>{h}</th>" for h in ("Time", "Kind", "Door", "Person", "Details"))
    table = f"<table id=journal><tr>{head}</tr>" + "".join(lines) + "</table>"
    return admin_page("Journal", form + table, note)
