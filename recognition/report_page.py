"""The report's page and files: a `Section` (table, figure, text, metrics) rendered as CSV, PNG
and one self-contained `report.html` (the choices that make two reports comparable, tables, base64
figures, the commands that regenerate each section, the report and run configs).
`recognition.report` and its section modules compute the sections."""

from __future__ import annotations

import base64
import csv
import html
import io
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.atomic import atomic_write_bytes
from pipeline.config import dump_yaml


class ReportView(Protocol):
    """What the page shows of a report (`recognition.report_core.Report` is one); this module imports no report code."""

    runs: Sequence[Any]  # each with .name, .device
    data: Sequence[Any]  # each with .path
    main: Any  # the swept data: .path, .split
    command: list[str]

    def reproduce(self, name: str) -> str: ...

    def choices(self) -> dict[str, str]: ...  # what the header states: preprocessing, noise mode, precision, seeds


@dataclass
class Section:
    """One block of the report: a table (CSV) and/or a figure (PNG), text and the metrics it adds."""

    name: str
    title: str
    text: str = ""
    header: list[str] | None = None
    rows: list[list] | None = None
    figure: bytes | None = None
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # extra commands or remarks shown under the table
    html_rows: int | None = None  # the page shows at most this many rows (None: all); the CSV has every row


def fmt_cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}"
    return str(v)


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def csv_bytes(section: Section) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(section.header)
    for row in section.rows:
        w.writerow([fmt_cell(v) for v in row])
    return buf.getvalue().encode()


def html_table(section: Section) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in section.header)
    shown = section.rows if section.html_rows is None else section.rows[: section.html_rows]
    cells = ("".join(f"<td>{html.escape(fmt_cell(v))}</td>" for v in row) for row in shown)
    body = "".join(f"<tr>{c}</tr>" for c in cells)
    more = len(section.rows) - len(shown)
    tail = f"<p>The first {len(shown)} of {len(section.rows)} rows; the CSV has all of them.</p>" if more else ""
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{tail}"


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}
table.choices td,table.choices th{text-align:left}div.wide{overflow-x:auto}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px;white-space:pre-wrap}
img{max-width:100%;display:block;margin:.5em 0}section{border-top:1px solid #ddd;margin-top:1.5em}"""
_SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok));
});"""


def render_html(report: ReportView, sections: list[Section], cfg_yaml: str) -> str:
    """The self-contained page: tables, base64 figures, commands and configs."""
    e = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Robustness report</title>"
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        "<h1>Robustness report</h1>",
        f"<p>Runs: {e(', '.join(r.name for r in report.runs))}. Data: "
        f"{e(', '.join(str(d.path) for d in report.data))} (sweeps on {e(str(report.main.path))}, split "
        f"{e(report.main.split)}). Device: {e(report.runs[0].device.type)}.</p>",
        "<h2 id='choices'>Choices</h2><table class='choices'><tbody>"
        + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in report.choices().items())
        + "</tbody></table>",
        f"<p>Produced by:</p><pre>{e(shlex.join(report.command))}</pre>",
        f"<details><summary>report config (resolved)</summary><pre>{e(cfg_yaml)}</pre></details>",
    ]
    for run in report.runs:
        run_yaml = dump_yaml(run.run_config) if run.run_config else "(official checkpoint: no run config)"
        parts.append(
            f"<details><summary>run {e(run.name)}: {e(str(run.checkpoint))} (sha256 {run.digest[:12]}, "
            f"faithful={run.cfg.faithful})</summary><pre>{e(run_yaml)}</pre></details>"
        )
    parts.append("<ul>" + "".join(f"<li><a href='#{s.name}'>{e(s.title)}</a></li>" for s in sections) + "</ul>")
    for s in sections:
        parts.append(f"<section id='{s.name}'><h2>{e(s.title)}</h2><p>{e(s.text)}</p>")
        if s.rows is not None:
            parts.append(html_table(s) + f"<p>CSV: <code>{s.name}.csv</code></p>")
        if s.figure is not None:
            parts.append(f"<img alt='{e(s.title)}' src='data:image/png;base64,{base64.b64encode(s.figure).decode()}'>")
        parts.append(f"<p>Regenerate:</p><pre>{e(report.reproduce(s.name))}</pre>")
        parts.extend(f"<pre>{e(n)}</pre>" for n in s.notes)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
