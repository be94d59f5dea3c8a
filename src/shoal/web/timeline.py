"""The timeline page of one simulated run: a single self-contained HTML file.

The record (shoal.sim.timeline) goes in as JSON inside a `<script type="application/json">`
element, and the page's CSS and JavaScript (assets/) are inlined around it, so the file opens
from disk in any browser, offline, and can be mailed as the bug report of a failing seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .dashboard import asset


def page(record: dict[str, Any]) -> str:
    # "</" would end the script element early; JSON allows its slash escaped.
    data = json.dumps(record, separators=(",", ":")).replace("</", "<\\/")
    return (asset("timeline.html")
            .replace("/*STYLE*/", asset("dashboard.css") + asset("timeline.css"))
            .replace("/*SCRIPT*/", asset("timeline.js"))
            .replace("/*RECORD*/", data)
            .replace("<!--TITLE-->", f"seed {int(record['seed'])}"))


def write(path: Path, record: dict[str, Any]) -> int:
    """Write the page; its size in bytes."""
    html = page(record)
    path.write_text(html, encoding="utf-8")
    return len(html.encode())
