// ui.js — small DOM helpers shared by the views: element building, number
// formatting, notices ("not available", errors, progress), charts through
// Chart.js when it is present, and a Markdown table renderer for reports.

// el('div', {class: 'x', onclick: f}, child, 'text', ...)
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function fmt(v, digits = 3) {
  if (v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '—';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en');
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return v.toFixed(digits);
}

export function fmtMs(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  return seconds < 1 ? (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1) + ' ms' : seconds.toFixed(2) + ' s';
}

export function fmtTime(iso) {
  if (!iso) return '—';
  return String(iso).replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A line of text in a notice style: 'na' (not available), 'error', 'info'.
export function notice(kind, text) {
  return el('p', { class: 'notice notice-' + kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}

// "Working…" with the elapsed seconds, for operations that take a while.
export function progress(label) {
  const t0 = performance.now();
  const span = el('span', { class: 'elapsed' }, '0.0 s');
  const node = el('div', { class: 'progress', role: 'status' }, el('progress'), ' ', label, ' ', span);
  const timer = setInterval(() => { span.textContent = ((performance.now() - t0) / 1000).toFixed(1) + ' s'; }, 100);
  return { node, done() { clearInterval(timer); node.remove(); } };
}

export function card(title, ...children) {
  return el('div', { class: 'card' }, title ? el('h3', {}, title) : null, ...children);
}

export function table(headers, rows, attrs) {
  return el('div', { class: 'table-wrap' },
    el('table', attrs || {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => el('td', {}, c)))))));
}

// ---------------------------------------------------------------- charts

export const hasChart = () => typeof window.Chart === 'function';
export const PALETTE = ['#3366cc', '#dc3912', '#109618', '#ff9900', '#990099', '#0099c6', '#dd4477',
  '#66aa00', '#b82e2e', '#316395', '#994499', '#22aa99'];

// A canvas holding a Chart.js chart, or a sentence when Chart.js is absent.
export function chart(config, height = 220) {
  if (!hasChart()) {
    return notice('na', 'Charts not available: Chart.js is missing (install libjs-chart.js and run make).');
  }
  const canvas = el('canvas', { role: 'img', 'aria-label': (config.options && config.options.plugins &&
    config.options.plugins.title && config.options.plugins.title.text) || 'chart' });
  const box = el('div', { class: 'chart-box', style: `height:${height}px` }, canvas);
  config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
  // eslint-disable-next-line no-new
  new window.Chart(canvas, config);
  return box;
}

// Destroys the charts under node before it is cleared (Chart.js keeps a
// registry of live charts and resize observers).
export function destroyCharts(node) {
  if (!hasChart()) return;
  for (const c of node.querySelectorAll('canvas')) {
    const ch = window.Chart.getChart(c);
    if (ch) ch.destroy();
  }
}

// ---------------------------------------------------------------- markdown

// Renders the tables and paragraphs of galaxy-train's report Markdown
// (headings, pipe tables, text); anything else is shown as text.
export function markdown(md) {
  const out = el('div', { class: 'md' });
  const lines = String(md).split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*\|/.test(line)) {
      const rows = [];
      while (i < lines.length && /^\s*\|/.test(lines[i])) rows.push(lines[i++]);
      i--;
      const cells = (l) => l.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
      const body = rows.slice(2).map(cells);
      out.append(table(cells(rows[0]), body, { class: 'report' }));
    } else if (/^#+\s/.test(line)) {
      out.append(el('h4', {}, line.replace(/^#+\s*/, '')));
    } else if (line.trim()) {
      out.append(el('p', { class: 'small' }, line.replace(/`/g, '')));
    }
  }
  return out;
}
