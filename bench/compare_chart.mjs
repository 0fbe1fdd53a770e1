// compare_chart: a self-contained SVG of bench/compare.mjs's results, one
// horizontal bar per (config, concurrency): the bar is the p50, the whisker
// runs from p95 (inner tick) to p99 (outer tick). Log-scale time axis, rows
// grouped by clock, colour by system. No dependencies.

const COLORS = { coppice: '#1b7f3b', 'coppice-pool': '#57c27a', runc: '#c0392b', crun: '#e67e22', bwrap: '#2c6fbb', floor: '#7f8c8d' };
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderSvg(runs, { title = 'Coppice vs runc / crun / bubblewrap', subtitle = '' } = {}) {
  const rows = runs.filter((r) => r.summary && r.summary.count > 0 && r.summary.p50 > 0);
  const groups = [];
  for (const r of rows) {
    let g = groups.find((x) => x.metric === r.metric);
    if (!g) groups.push((g = { metric: r.metric, rows: [] }));
    g.rows.push(r);
  }
  // Within a clock: one cluster per concurrency, the systems side by side in a fixed order.
  const order = Object.keys(COLORS);
  for (const g of groups) {
    g.rows = g.rows.map((r, i) => ({ r, i })).sort((a, b) => a.r.concurrency - b.r.concurrency ||
      order.indexOf(a.r.system) - order.indexOf(b.r.system) || a.i - b.i).map((x) => x.r);
    g.clusters = new Set(g.rows.map((r) => r.concurrency)).size;
  }
  const W = 1100, left = 380, right = 70, top = 78, rowH = 20, groupGap = 34, clusterGap = 8, bottom = 88;
  const H = top + groups.reduce((a, g) => a + groupGap + g.rows.length * rowH + (g.clusters - 1) * clusterGap, 0) + bottom;
  const vals = rows.flatMap((r) => [r.summary.p50, r.summary.p99, r.summary.min]).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...vals))), hi = 10 ** Math.ceil(Math.log10(Math.max(...vals)));
  const x = (v) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - left - right);
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="16" y="26" font-size="18" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="16" y="46" fill="#444">${esc(subtitle)}</text>`);
  out.push(`<text x="16" y="64" fill="#444">bar = p50, whisker = p95 (short tick) to p99 (long tick); milliseconds, log scale; c = concurrency</text>`);
  const plotTop = top, plotBottom = H - bottom + 6;
  // Decade and 2/5 grid lines.
  for (let d = lo; d <= hi; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi) break;
      const xx = x(v).toFixed(1);
      out.push(`<line x1="${xx}" y1="${plotTop}" x2="${xx}" y2="${plotBottom}" stroke="${m === 1 ? '#bbb' : '#e6e6e6'}"/>`);
      out.push(`<text x="${xx}" y="${plotBottom + 16}" text-anchor="middle" fill="${m === 1 ? '#000' : '#777'}">${v >= 1 ? v : v.toPrecision(1)}</text>`);
    }
  }
  out.push(`<text x="${(left + W - right) / 2}" y="${plotBottom + 34}" text-anchor="middle">milliseconds (log scale)</text>`);
  let y = top;
  for (const g of groups) {
    y += groupGap;
    out.push(`<text x="16" y="${y - 10}" font-size="14" font-weight="bold">${esc(g.metric)}</text>`);
    let lastC = null;
    for (const r of g.rows) {
      if (lastC !== null && r.concurrency !== lastC) {
        y += clusterGap;
        out.push(`<line x1="16" y1="${y - clusterGap / 2}" x2="${W - right}" y2="${y - clusterGap / 2}" stroke="#ddd" stroke-dasharray="3,3"/>`);
      }
      lastC = r.concurrency;
      const s = r.summary, c = COLORS[r.system] || '#555';
      const yy = y + 3, h = rowH - 6, mid = y + rowH / 2;
      const label = `${r.label || r.config}  c=${r.concurrency}` + (s.failures ? `  (${s.failures} failed)` : '');
      out.push(`<text x="${left - 8}" y="${mid + 4}" text-anchor="end">${esc(label)}</text>`);
      out.push(`<rect x="${left}" y="${yy}" width="${Math.max(1, x(s.p50) - left).toFixed(1)}" height="${h}" fill="${c}"/>`);
      const x50 = x(s.p50), x95 = x(s.p95), x99 = x(s.p99);
      out.push(`<line x1="${x50.toFixed(1)}" y1="${mid}" x2="${x99.toFixed(1)}" y2="${mid}" stroke="#222"/>`);
      out.push(`<line x1="${x95.toFixed(1)}" y1="${mid - 3}" x2="${x95.toFixed(1)}" y2="${mid + 3}" stroke="#222"/>`);
      out.push(`<line x1="${x99.toFixed(1)}" y1="${mid - 6}" x2="${x99.toFixed(1)}" y2="${mid + 6}" stroke="#222" stroke-width="1.5"/>`);
      out.push(`<text x="${Math.min(x99 + 6, W - right - 2).toFixed(1)}" y="${mid + 4}" fill="#333" font-size="11">${s.p50 < 10 ? s.p50.toFixed(2) : s.p50.toFixed(1)}</text>`);
      y += rowH;
    }
  }
  // Legend.
  let lx = left;
  const ly = H - 18;
  for (const [k, c] of Object.entries(COLORS)) {
    if (!rows.some((r) => r.system === k)) continue;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="${ly}">${esc(k)}</text>`);
    lx += 30 + k.length * 8;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
