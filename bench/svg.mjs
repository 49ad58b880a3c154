// Minimal SVG charts for the benchmarks: line charts of time series and
// bar charts, written as plain SVG so docs/ can show them without tools.

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * series: [{ name, points: [[x, y], ...] }]; marks: [{ x, label }] (vertical lines)
 */
export function lineChart({ title, xLabel, yLabel, series, marks = [], width = 760, height = 360, logX = false }) {
  const m = { l: 70, r: 20, t: 40, b: 50 };
  const all = series.flatMap((s) => s.points);
  const tx = (x) => (logX ? Math.log10(Math.max(x, 1e-9)) : x);
  const xs = all.map((p) => tx(p[0]));
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const y1 = Math.max(...all.map((p) => p[1])) * 1.1 || 1;
  const X = (x) => m.l + ((tx(x) - x0) / (x1 - x0 || 1)) * (width - m.l - m.r);
  const Y = (y) => height - m.b - (y / y1) * (height - m.t - m.b);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`];
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  out.push(`<line x1="${m.l}" y1="${height - m.b}" x2="${width - m.r}" y2="${height - m.b}" stroke="black"/>`);
  out.push(`<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${height - m.b}" stroke="black"/>`);
  for (let i = 0; i <= 5; i++) {
    const y = (y1 / 5) * i;
    out.push(`<text x="${m.l - 6}" y="${Y(y) + 4}" text-anchor="end">${y >= 100 ? y.toFixed(0) : y.toFixed(2)}</text>`);
    out.push(`<line x1="${m.l}" y1="${Y(y)}" x2="${width - m.r}" y2="${Y(y)}" stroke="#eee"/>`);
  }
  const ticks = logX ? [...new Set(all.map((p) => p[0]))].filter((_, i, a) => i % Math.ceil(a.length / 8) === 0) : Array.from({ length: 6 }, (_, i) => x0 + ((x1 - x0) / 5) * i);
  for (const t of ticks) out.push(`<text x="${X(t)}" y="${height - m.b + 16}" text-anchor="middle">${t >= 1024 && logX ? `${(t / 1024).toFixed(0)}K` : +t.toFixed(1)}</text>`);
  out.push(`<text x="${width / 2}" y="${height - 10}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(`<text x="16" y="${height / 2}" text-anchor="middle" transform="rotate(-90 16 ${height / 2})">${esc(yLabel)}</text>`);
  for (const mk of marks) {
    out.push(`<line x1="${X(mk.x)}" y1="${m.t}" x2="${X(mk.x)}" y2="${height - m.b}" stroke="#999" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${X(mk.x) + 3}" y="${m.t + 10}" font-size="10" fill="#555">${esc(mk.label)}</text>`);
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="1.8" points="${s.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    out.push(`<rect x="${width - m.r - 180}" y="${m.t + 6 + i * 16}" width="10" height="10" fill="${c}"/>`);
    out.push(`<text x="${width - m.r - 165}" y="${m.t + 15 + i * 16}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/** bars: [{ label, value }] */
export function barChart({ title, yLabel, bars, width = 560, height = 320 }) {
  const m = { l: 70, r: 20, t: 40, b: 60 };
  const y1 = Math.max(...bars.map((b) => b.value)) * 1.15 || 1;
  const bw = (width - m.l - m.r) / bars.length;
  const Y = (y) => height - m.b - (y / y1) * (height - m.t - m.b);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`];
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  out.push(`<line x1="${m.l}" y1="${height - m.b}" x2="${width - m.r}" y2="${height - m.b}" stroke="black"/>`);
  out.push(`<text x="16" y="${height / 2}" text-anchor="middle" transform="rotate(-90 16 ${height / 2})">${esc(yLabel)}</text>`);
  bars.forEach((b, i) => {
    const x = m.l + i * bw + bw * 0.15;
    out.push(`<rect x="${x}" y="${Y(b.value)}" width="${bw * 0.7}" height="${height - m.b - Y(b.value)}" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${x + bw * 0.35}" y="${Y(b.value) - 4}" text-anchor="middle">${b.value.toFixed(0)}</text>`);
    out.push(`<text x="${x + bw * 0.35}" y="${height - m.b + 16}" text-anchor="middle">${esc(b.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
