"""A standalone HTML drift report: one page, no scripts, a chart per feature (inline SVG).

:func:`drift_report` compares two tables (reference and current) the way a monitor does and
:func:`render_html` writes the page: a summary, a table of every column's test and a chart of the
reference and current distributions side by side. The CLI's ``modelyard monitor report`` uses both.
"""
from __future__ import annotations

import datetime as dt
import html
import math

from modelyard.monitoring.drift import data_drift, data_quality
from modelyard.monitoring.profile import Profile, profile_frame

__all__ = ["drift_report", "render_html"]

_W, _H, _PAD = 420, 150, 28
_REF, _CUR = "#4c78a8", "#f58518"


def drift_report(reference, current, method: str | None = None, threshold: float | None = None,
                 columns: list[str] | None = None, drift_share: float = 0.5) -> dict:
    """Drift and quality of ``current`` against ``reference`` (DataFrames or profiles)."""
    ref = reference if isinstance(reference, Profile) else profile_frame(reference)
    cur = current if isinstance(current, Profile) else profile_frame(current)
    drift = data_drift(ref, cur, columns=columns, method=method, threshold=threshold, drift_share=drift_share,
                       histogram=True)
    return {"reference_rows": ref.rows, "current_rows": cur.rows, "drift_share": drift["drift_share"],
            "dataset_drift": drift["dataset_drift"], "drifted_columns": drift["drifted_columns"],
            "columns": [c.to_dict() for c in drift["columns"]], "quality": data_quality(ref, cur)}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _chart(hist: dict) -> str:
    if not hist:
        return "<p class=muted>no chart (no values to compare)</p>"
    ref, cur = hist["reference"], hist["current"]
    n = len(ref)
    top = max(max(ref, default=0), max(cur, default=0)) or 1.0
    inner_w, inner_h = _W - 2 * _PAD, _H - 2 * _PAD
    slot = inner_w / max(n, 1)
    bar = slot * 0.4
    parts = [f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img">',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>']
    for i, (r, c) in enumerate(zip(ref, cur)):
        x = _PAD + i * slot
        for j, (v, colour) in enumerate(((r, _REF), (c, _CUR))):
            h = inner_h * v / top
            parts.append(f'<rect x="{x + slot * 0.1 + j * bar:.1f}" y="{_H - _PAD - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{"reference" if j == 0 else "current"}: '
                         f'{v:.3f}</title></rect>')
    if hist.get("type") == "numeric":
        edges = hist["edges"]
        parts.append(f'<text x="{_PAD}" y="{_H - 8}" font-size="10">{_fmt(edges[0])}</text>')
        parts.append(f'<text x="{_W - _PAD}" y="{_H - 8}" font-size="10" text-anchor="end">{_fmt(edges[-1])}</text>')
    else:
        for i, label in enumerate(hist.get("labels", [])):
            x = _PAD + (i + 0.5) * slot
            parts.append(f'<text x="{x:.1f}" y="{_H - 12}" font-size="9" text-anchor="middle">'
                         f'{html.escape(str(label)[:8])}</text>')
    parts.append(f'<text x="{_PAD}" y="14" font-size="10">max share {top:.3f}</text></svg>')
    return "".join(parts)


def render_html(report: dict, title: str = "modelyard drift report", reference_name: str = "reference",
                current_name: str = "current") -> str:
    cols = report["columns"]
    drifted = report["drifted_columns"]
    quality = report.get("quality", {}).get("columns", {})
    rows = []
    for c in cols:
        flag = "drift" if c["drifted"] else "ok"
        q = quality.get(c["column"], {})
        rows.append(f'<tr class="{flag}"><td><a href="#c-{html.escape(c["column"])}">{html.escape(c["column"])}</a>'
                    f'</td><td>{c["method"]}</td><td>{_fmt(c["value"])}</td><td>{c["statistic"].replace("_", "-")} '
                    f'{"<" if c["statistic"] == "p_value" else ">="} {_fmt(c["threshold"])}</td>'
                    f'<td>{"drifted" if c["drifted"] else "no drift"}</td><td>{_fmt(q.get("null_ratio"))}</td></tr>')
    sections = []
    for c in cols:
        sections.append(
            f'<section id="c-{html.escape(c["column"])}"><h3>{html.escape(c["column"])} '
            f'<span class="{"drift" if c["drifted"] else "ok"}">{"drifted" if c["drifted"] else "no drift"}</span>'
            f'</h3><p>{c["method"]} = {_fmt(c["value"])} (threshold {_fmt(c["threshold"])}), '
            f'{c["reference_rows"]} reference and {c["current_rows"]} current values</p>{_chart(c["histogram"])}'
            f'</section>')
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "Dataset drift detected" if report["dataset_drift"] else "No dataset drift"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222;background:#fff}}
@media (prefers-color-scheme: dark){{body{{color:#ddd;background:#181818}} svg text{{fill:#ddd}}}}
table{{border-collapse:collapse;width:100%}} td,th{{padding:.3rem .5rem;border-bottom:1px solid #8884;text-align:left}}
.drift{{color:#c0392b;font-weight:600}} .ok{{color:#2e7d32}} .muted{{color:#888}}
section{{display:inline-block;vertical-align:top;margin:1rem 1rem 0 0}} h3{{margin:.2rem 0;font-size:1rem}}
.legend span{{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(reference_name)} ({report["reference_rows"]} rows) against {html.escape(current_name)}
({report["current_rows"]} rows), {when}.</p>
<p class="{"drift" if report["dataset_drift"] else "ok"}">{verdict}: {len(drifted)} of {len(cols)} columns drifted
({report["drift_share"]:.0%}){": " + html.escape(", ".join(drifted)) if drifted else ""}.</p>
<p class="legend"><span style="background:{_REF}"></span>reference<span style="background:{_CUR}"></span>current</p>
<table><thead><tr><th>column</th><th>test</th><th>value</th><th>drift when</th><th>result</th><th>null share</th></tr>
</thead><tbody>{"".join(rows)}</tbody></table>
{"".join(sections)}
<p class="muted">Tests are chosen as Evidently's DataDriftPreset chooses them: p-value tests (Kolmogorov-Smirnov,
chi-squared, z) for references of at most 1000 rows, distances (Wasserstein, Jensen-Shannon) above.</p>
</body></html>
"""
