"""The evaluation report: ONE self-contained static HTML file (not in MATLAB).

No server, no CDN, no network request: the CSS and JavaScript are inline, the recall@N
curve is an inline SVG, the recall table plain HTML, and the per-query data one JSON
block the page's script renders from.  Images are relative links to the prediction
panels beside the report (when they were written), loaded lazily.

The per-query browser renders one page of rows at a time (50 by default), so 10,000
queries stay responsive; the data is columnar (ids, metres, flags; database names only
while they fit a budget), about 0.3 MB per 1,000 queries at N = 10.  Filters: all /
wrong at 1 / wrong at N / no positive / each condition (Tokyo 24/7's day, sunset,
night); a text filter on the query's file name; sorting by the rank of the first
correct result.  The page state lives in the URL fragment
(``#filter=wrong1&text=abc&sort=first0&page=2&per=50``), so a view can be bookmarked
or opened directly (the tests drive the filters that way).

A comparison of two runs (:mod:`matnet.run_comparison`) uses the same page with both
runs per query (A's top-N above B's) and fixed / broken filters.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from converters.atomic_file import atomic_write

from .predictions import Predictions

HIGHLIGHT_NS = (1, 5, 10, 20, 25)
DB_NAMES_BUDGET = 2_000_000  # characters of database names embedded at most
RUN_COLOURS = ("#1f5fd6", "#d6541f", "#2a9d3c", "#8a2ad6")


def recall_svg(curves, width: int = 560, height: int = 260) -> str:
    """recall@N curves ``[(label, ns, recalls)]`` as an inline SVG (x: N, y: recall 0..1)."""
    L, R, T, B = 52, 16, 14, 44
    maxN = max(max(ns) for _, ns, _ in curves)
    X = lambda n: L + (width - L - R) * (n / maxN)
    Y = lambda r: T + (height - T - B) * (1 - r)
    parts = [f'<svg id="recall-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="recall at N">',
             f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="#fff" stroke="#999"/>']
    for r in np.linspace(0, 1, 6):
        parts.append(f'<line x1="{L}" x2="{width - R}" y1="{Y(r):.1f}" y2="{Y(r):.1f}" stroke="#e3e3e3"/>'
                     f'<text x="{L - 6}" y="{Y(r) + 4:.1f}" text-anchor="end" font-size="11">{r:.1f}</text>')
    step = next((s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if maxN / s <= 10), 10 ** len(str(maxN)))
    for n in sorted({1} | set(range(step, maxN + 1, step))):
        parts.append(f'<text x="{X(n):.1f}" y="{height - B + 16}" text-anchor="middle" font-size="11">{n}</text>')
    parts.append(f'<text x="{(L + width - R) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">N</text>'
                 f'<text x="14" y="{(T + height - B) / 2}" font-size="12" '
                 f'transform="rotate(-90 14 {(T + height - B) / 2})" text-anchor="middle">recall@N</text>')
    for k, (label, ns, rec) in enumerate(curves):
        c = RUN_COLOURS[k % len(RUN_COLOURS)]
        pts = " ".join(f"{X(n):.1f},{Y(r):.1f}" for n, r in zip(ns, rec))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        parts += [f'<circle cx="{X(n):.1f}" cy="{Y(r):.1f}" r="2.5" fill="{c}"><title>{html.escape(label)}: '
                  f'recall@{n} = {100 * r:.2f}%</title></circle>' for n, r in zip(ns, rec)]
        parts.append(f'<text x="{width - R - 8}" y="{height - B - 12 - 16 * (len(curves) - 1 - k)}" '
                     f'text-anchor="end" font-size="12" fill="{c}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def recall_table(recallNs, runs) -> str:
    """An HTML table of recall % at every N for ``runs`` = [(label, recall per N)];
    cell ids ``recall-<run>-<N>``, the value also in ``data-recall``."""
    head = "".join(f'<th class="{"hl" if n in HIGHLIGHT_NS else ""}">{n}</th>' for n in recallNs)
    body = []
    for k, (label, rec) in enumerate(runs):
        cells = "".join(f'<td id="recall-{k}-{n}" data-recall="{r!r}" class="{"hl" if n in HIGHLIGHT_NS else ""}">'
                        f'{100 * r:.2f}</td>' for n, r in zip(recallNs, (float(x) for x in rec)))
        body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return (f'<div class="scroll"><table id="recall-table"><thead><tr><th>recall@N (%)</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def run_columns(pred: Predictions, panelUrl: str | None, panelFiles: dict | None, dbNames: dict) -> dict:
    """One run's per-query columns for the page (rows in ``pred``'s order)."""
    k = pred.valid.sum(1)
    ids = [[int(i) for i in row[:n]] for row, n in zip(pred.ids, k)]
    for row in ids:
        for i in row:
            dbNames.setdefault(i, pred.db_names.get(i, ""))
    rnd = lambda a, f: [[float(f"{x:{f}}") for x in row[:n]] for row, n in zip(a, k)]
    return {"first": pred.first_correct().tolist(), "ids": ids, "m": rnd(pred.meters, ".1f"),
            "d": rnd(np.where(np.isfinite(pred.distance), pred.distance, -1), ".4g"),
            "c": ["".join("1" if c else "0" for c in row[:n]) for row, n in zip(pred.correct, k)],
            "panel": [panelFiles.get(r, "") if panelFiles else "" for r in range(pred.queries.size)],
            "panelUrl": panelUrl}


def write_page(path, title: str, header_html: str, data: dict) -> Path:
    """The page: ``header_html`` (summary, curve, table) above the per-query browser fed
    with ``data`` (see :func:`report_data`)."""
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = (_TEMPLATE.replace("%TITLE%", html.escape(title)).replace("%HEADER%", header_html)
            .replace("%DATA%", blob).replace("%SCRIPT%", _SCRIPT).replace("%STYLE%", _STYLE))
    path = Path(path)
    with atomic_write(path, "w") as f:
        f.write(page)
    return path


def report_data(preds, labels, panel_urls, panel_files, filters, tags, sorts) -> dict:
    """The page's JSON: queries (ids, names, conditions, tags) and each run's columns."""
    p0 = preds[0]
    dbNames: dict = {}
    runs = [dict(label=lab, **run_columns(p, url, files, dbNames))
            for p, lab, url, files in zip(preds, labels, panel_urls, panel_files)]
    if sum(len(v) for v in dbNames.values()) > DB_NAMES_BUDGET:
        dbNames = {}  # too many: ids only (the CSV has the names)
    return {"n": int(max(p.n for p in preds)), "runs": runs, "filters": filters, "sorts": sorts,
            "q": {"id": p0.queries.tolist(), "name": list(p0.query_names),
                  "cond": None if p0.condition is None else [str(c) for c in p0.condition], "tags": tags},
            "db": {str(k): v for k, v in dbNames.items()}}


def single_filters(pred: Predictions):
    """Filters and per-query tags of one run: wrong at 1, wrong at N, no positive, conditions."""
    n = pred.n
    w1, wN, nopos = ~pred.correct_at(1), ~pred.correct_at(n), ~pred.has_positive
    filters = [{"key": "all", "label": "all"}, {"key": "wrong1", "label": "wrong at 1"},
               {"key": "wrongN", "label": f"wrong at {n}"}, {"key": "nopos", "label": "no positive"}]
    conds = [] if pred.condition is None else sorted(set(pred.condition.tolist()))
    filters += [{"key": f"cond:{c}", "label": c} for c in conds]
    tags = []
    for r in range(pred.queries.size):
        t = [k for k, on in (("wrong1", w1[r]), ("wrongN", wN[r]), ("nopos", nopos[r])) if on]
        if pred.condition is not None:
            t.append(f"cond:{pred.condition[r]}")
        tags.append(" ".join(t))
    return filters, tags


def relative_url(target, fromDir) -> str:
    """``target`` as a relative URL from the folder ``fromDir`` (forward slashes)."""
    return Path(os.path.relpath(target, fromDir)).as_posix()


def write_report(path, pred: Predictions, recallNs, recall, title: str, info: dict | None = None,
                 panelsDir=None, panelFiles: dict | None = None) -> Path:
    """The report of one evaluation: ``recall`` at ``recallNs`` (the JSON record's),
    ``info`` (label -> value lines of the summary), the browser over ``pred`` with
    links to the panels in ``panelsDir`` (``panelFiles``: {row: file name})."""
    path = Path(path)
    url = relative_url(panelsDir, path.parent) + "/" if panelsDir is not None else None
    filters, tags = single_filters(pred)
    sorts = [{"key": "id", "label": "query id"}, {"key": "first0", "label": "rank of first correct"},
             {"key": "-first0", "label": "rank of first correct (descending)"}]
    data = report_data([pred], ["top-%d" % pred.n], [url], [panelFiles], filters, tags, sorts)
    header = (f'<div class="top">{summary_html(info or {})}{recall_svg([("recall", list(recallNs), list(recall))])}'
              f'</div>{recall_table(list(recallNs), [("recall", recall)])}')
    return write_page(path, title, header, data)


def summary_html(info: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in info.items())
    return f'<table id="summary">{rows}</table>'


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>%TITLE%</title><style>%STYLE%</style></head>
<body><h1>%TITLE%</h1>
<section id="head">%HEADER%</section>
<section id="browser"><h2>Queries</h2>
<div id="filters"></div>
<div id="controls"><input id="text" type="search" placeholder="filter by file name"> <label>sort <select id="sort"></select></label>
<button id="prev">&larr;</button> <span id="page"></span> <button id="next">&rarr;</button> <span id="count"></span></div>
<table id="queries"><thead id="qhead"></thead><tbody id="rows"></tbody></table></section>
<script type="application/json" id="data">%DATA%</script>
<script>%SCRIPT%</script></body></html>
"""

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px}h2{font-size:17px;margin-top:24px}
table{border-collapse:collapse}
.top{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
#summary th{text-align:left;padding:1px 10px 1px 0;color:#555;font-weight:normal}
#recall-table{margin:8px 0;font-size:13px}#recall-table td,#recall-table th{border:1px solid #ccc;padding:2px 5px;text-align:right}
.scroll{overflow-x:auto;max-width:100%}
#changes{margin:8px 0}#changes td,#changes th{border:1px solid #ccc;padding:2px 8px;text-align:right}
#recall-table .hl{background:#eef3ff;font-weight:bold}
#filters button{margin:2px;padding:3px 9px;border:1px solid #888;border-radius:12px;background:#f6f6f6;cursor:pointer}
#filters button.on{background:#1f5fd6;color:#fff;border-color:#1f5fd6}
#controls{margin:6px 0}#controls input{width:240px}
#queries{width:100%;margin-top:6px}#queries td,#queries th{border-top:1px solid #ddd;padding:4px;vertical-align:top;text-align:left}
.name{font-family:monospace;font-size:12px;word-break:break-all;max-width:260px}
.first{font-weight:bold}.first.none{color:#c22}
.chips{display:flex;flex-wrap:wrap;gap:3px;margin:2px 0}
.chip{font-size:11px;padding:1px 4px;border-radius:3px;color:#fff;font-family:monospace}
.chip.ok{background:#0a0}.chip.bad{background:#d22}
.run{margin-bottom:4px}.runlab{font-size:11px;color:#555}
img.panel{height:84px;max-width:100%;display:block;margin-top:2px}
"""

_SCRIPT = r"""
(function(){
const D=JSON.parse(document.getElementById('data').textContent);
const Q=D.q, nQ=Q.id.length, RUNS=D.runs;
const tagSets=Q.tags.map(t=>new Set(t?t.split(' '):[]));
const st={filter:'all',text:'',sort:'id',page:1,per:50};
function readHash(){
  const p=new URLSearchParams(location.hash.slice(1));
  st.filter=p.get('filter')||'all'; st.text=p.get('text')||''; st.sort=p.get('sort')||'id';
  st.page=Math.max(1,parseInt(p.get('page')||'1',10)||1); st.per=Math.max(1,parseInt(p.get('per')||'50',10)||50);
}
function go(ch){
  Object.assign(st,ch);
  const p=new URLSearchParams();
  for(const k of ['filter','text','sort','page','per']){p.set(k,String(st[k]));}
  const h='#'+p.toString();
  if(location.hash!==h){location.hash=h;}else{render();}
}
function el(tag,attrs,text){const e=document.createElement(tag);if(attrs)for(const k in attrs)e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e;}
function selected(){
  let rows=[];const t=st.text.toLowerCase();
  for(let i=0;i<nQ;i++){
    if(st.filter!=='all'&&!tagSets[i].has(st.filter))continue;
    if(t&&Q.name[i].toLowerCase().indexOf(t)<0)continue;
    rows.push(i);}
  const s=st.sort, desc=s[0]==='-', key=desc?s.slice(1):s;
  if(key.startsWith('first')){
    const r=RUNS[parseInt(key.slice(5),10)||0];
    const v=i=>r.first[i]>0?r.first[i]:Infinity;
    rows.sort((a,b)=>{const x=v(a),y=v(b);return (x===y?a-b:(x<y?-1:1)*(desc?-1:1));});
  }
  return rows;
}
function runCell(r,i){
  const d=el('div',{'class':'run'});
  if(RUNS.length>1)d.appendChild(el('div',{'class':'runlab'},r.label));
  const chips=el('div',{'class':'chips'});
  const ids=r.ids[i];
  for(let j=0;j<ids.length;j++){
    const ok=r.c[i][j]==='1';
    const nm=D.db[String(ids[j])]||('db '+ids[j]);
    chips.appendChild(el('span',{'class':'chip '+(ok?'ok':'bad'),'title':nm+'  d='+r.d[i][j]},'#'+(j+1)+' '+Math.round(r.m[i][j])+'m'));
  }
  if(!ids.length)chips.appendChild(el('span',{'class':'chip bad'},'no result'));
  d.appendChild(chips);
  if(r.panelUrl&&r.panel[i]){
    const a=el('a',{'href':r.panelUrl+r.panel[i]});
    a.appendChild(el('img',{'class':'panel','loading':'lazy','src':r.panelUrl+r.panel[i],'alt':'panel'}));
    d.appendChild(a);
  }
  return d;
}
function render(){
  readHash();
  for(const b of document.querySelectorAll('#filters button'))b.className=b.dataset.filter===st.filter?'on':'';
  document.getElementById('text').value=st.text; document.getElementById('sort').value=st.sort;
  const rows=selected(), pages=Math.max(1,Math.ceil(rows.length/st.per));
  const page=Math.min(st.page,pages), body=document.getElementById('rows');
  body.textContent='';
  for(const i of rows.slice((page-1)*st.per,page*st.per)){
    const tr=el('tr',{'data-qid':String(Q.id[i])});
    tr.appendChild(el('td',null,String(Q.id[i])));
    tr.appendChild(el('td',{'class':'name'},Q.name[i]));
    if(Q.cond)tr.appendChild(el('td',null,Q.cond[i]));
    for(const r of RUNS){const f=r.first[i];tr.appendChild(el('td',{'class':'first'+(f?'':' none')},f?String(f):'-'));}
    const td=el('td');for(const r of RUNS)td.appendChild(runCell(r,i));tr.appendChild(td);
    body.appendChild(tr);
  }
  document.getElementById('page').textContent='page '+page+' / '+pages;
  document.getElementById('count').textContent=rows.length+' of '+nQ+' queries';
  document.getElementById('count').dataset.count=String(rows.length);
}
const counts={};for(const s of tagSets)for(const t of s)counts[t]=(counts[t]||0)+1;
const fb=document.getElementById('filters');
for(const f of D.filters){
  const b=el('button',{'data-filter':f.key},f.label+' ('+(f.key==='all'?nQ:(counts[f.key]||0))+')');
  b.addEventListener('click',()=>go({filter:f.key,page:1}));fb.appendChild(b);
}
const sel=document.getElementById('sort');
for(const s of D.sorts)sel.appendChild(el('option',{'value':s.key},s.label));
sel.addEventListener('change',()=>go({sort:sel.value,page:1}));
document.getElementById('text').addEventListener('input',e=>go({text:e.target.value,page:1}));
document.getElementById('prev').addEventListener('click',()=>go({page:Math.max(1,st.page-1)}));
document.getElementById('next').addEventListener('click',()=>go({page:st.page+1}));
const hr=el('tr');for(const h of ['id','query'].concat(Q.cond?['condition']:[]).concat(RUNS.map(r=>'first correct'+(RUNS.length>1?' ('+r.label+')':''))).concat(['top-'+D.n]))hr.appendChild(el('th',null,h));
document.getElementById('qhead').appendChild(hr);
window.addEventListener('hashchange',render);
render();
})();
"""
