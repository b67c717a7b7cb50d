// anomalies.js — the stored anomaly scores (GET /v1/anomalies), most
// anomalous first: filters (survey, minimum score, date window) go to the
// server; the maximum score and column sorting apply to the page shown.
// Cursor paging keeps a stack of the cursors seen, so "previous" works
// without the API going backwards. CSV and VOTable links carry the filters.
// Each row shows the thumbnail the server stored with the score (the model's
// input, thumbnail_url), loaded lazily at a fixed size.
import { api } from './api.js';
import { el, clear, fmt, fmtTime, notice, card } from './ui.js';

let root = null, tableBox = null, pager = null, links = null;
const state = { cursors: [null], page: 0, items: [], sort: null, dir: -1, next: null };
const COLUMNS = [
  ['object_id', 'Object'], ['survey', 'Survey'], ['score', 'Score'], ['is_anomaly', 'Flagged'],
  ['threshold', 'Threshold'], ['class_name', 'Known class'], ['ra', 'RA'], ['dec', 'Dec'],
  ['model_version', 'Model version'], ['created_at', 'Scored'],
];

export function show(section) {
  if (!root) build(section);
  load();
}

function field(label, attrs) {
  return el('label', {}, label, ' ', el('input', attrs));
}

function build(section) {
  root = section;
  const form = el('form', { id: 'anomaly-filters', class: 'controls' },
    field('Survey', { name: 'survey', placeholder: 'any', size: 8 }),
    field('Score from', { name: 'min_score', type: 'number', min: 0, max: 1, step: 0.01, placeholder: '0' }),
    field('to', { name: 'max_score', type: 'number', min: 0, max: 1, step: 0.01, placeholder: '1' }),
    field('Since', { name: 'since', type: 'date' }), field('Until', { name: 'until', type: 'date' }),
    field('Per page', { name: 'limit', type: 'number', min: 1, max: 1000, value: 25, size: 4 }),
    el('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => { e.preventDefault(); state.cursors = [null]; state.page = 0; load(); });
  tableBox = el('div', { id: 'anomaly-table' }, 'Loading…');
  pager = el('div', { class: 'controls pager' });
  links = el('p', { class: 'small' });
  section.append(el('h2', {}, 'Anomalies'), card(null, form, links), card(null, tableBox, pager));
}

// The server-side query of the filters (without cursor).
function query() {
  const f = new FormData(root.querySelector('#anomaly-filters'));
  const q = new URLSearchParams();
  const survey = String(f.get('survey') || '').trim();
  if (survey) q.set('survey', survey);
  if (f.get('min_score')) q.set('min_score', f.get('min_score'));
  // Dates are whole UTC days; the API's until is exclusive, so the day
  // after the one picked is sent.
  if (f.get('since')) q.set('since', f.get('since'));
  if (f.get('until')) {
    const d = new Date(f.get('until') + 'T00:00:00Z');
    d.setUTCDate(d.getUTCDate() + 1);
    q.set('until', d.toISOString().slice(0, 10));
  }
  q.set('limit', String(f.get('limit') || 25));
  return q;
}

async function load() {
  const q = query();
  const cursor = state.cursors[state.page];
  if (cursor) q.set('cursor', cursor);
  const r = await api('/v1/anomalies?' + q.toString());
  clear(tableBox);
  clear(pager);
  const dl = new URLSearchParams(q);
  dl.delete('cursor');
  clear(links).append('Download this selection: ',
    el('a', { href: '/v1/anomalies?' + dl + '&format=csv', download: 'anomalies.csv' }, 'CSV'), ' · ',
    el('a', { href: '/v1/anomalies?' + dl + '&format=votable', download: 'anomalies.vot' }, 'VOTable'),
    ' (one page of the given size).');
  if (!r.ok) {
    tableBox.append(notice(r.status === 404 ? 'na' : 'error', 'Anomalies not available: ' + r.error));
    return;
  }
  state.items = r.data.items || [];
  state.next = r.data.next_cursor || null;
  render();
}

function visible() {
  const f = new FormData(root.querySelector('#anomaly-filters'));
  const max = f.get('max_score') === '' || f.get('max_score') === null ? Infinity : Number(f.get('max_score'));
  let rows = state.items.filter((it) => !(it.score > max));
  if (state.sort) {
    const k = state.sort;
    rows = [...rows].sort((a, b) => {
      const x = a[k], y = b[k];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * state.dir;
    });
  }
  return rows;
}

function cell(k, v) {
  if (k === 'score' || k === 'threshold') return fmt(v, 3);
  if (k === 'ra' || k === 'dec') return fmt(v, 5);
  if (k === 'is_anomaly') return v === undefined || v === null ? '—' : v ? 'yes' : 'no';
  if (k === 'created_at') return fmtTime(v);
  if (k === 'model_version' && v) return el('code', { title: v }, String(v).slice(0, 12));
  return v === undefined || v === null ? '—' : String(v);
}

function render() {
  clear(tableBox);
  clear(pager);
  const rows = visible();
  if (!state.items.length) {
    tableBox.append(notice('na', state.page ? 'No more anomalies.' : 'No anomaly scores stored for these filters.'));
  } else {
    const cols = COLUMNS.filter(([k]) => state.items.some((it) => k in it));
    const thumbs = state.items.some((it) => it.thumbnail_url);
    const head = cols.map(([k, label]) => el('th', { scope: 'col', 'aria-sort': state.sort === k ? (state.dir > 0 ? 'ascending' : 'descending') : 'none' },
      el('button', { type: 'button', class: 'sort', onclick: () => {
        state.dir = state.sort === k ? -state.dir : (k === 'score' ? -1 : 1);
        state.sort = k;
        render();
      } }, label, state.sort === k ? (state.dir > 0 ? ' ▲' : ' ▼') : '')));
    const body = rows.map((it) => el('tr', { class: it.is_anomaly ? 'flagged' : '' },
      thumbs ? el('td', { class: 'thumb' }, it.thumbnail_url ? el('img', { src: it.thumbnail_url, class: 'thumb',
        loading: 'lazy', width: 48, height: 48, alt: `cutout of ${it.object_id} as the model saw it` }) : '—') : null,
      cols.map(([k]) => el('td', { dataset: { col: k } }, cell(k, it[k])))));
    tableBox.append(el('div', { class: 'table-wrap' }, el('table', { class: 'anomalies' },
      el('thead', {}, el('tr', {}, thumbs ? el('th', { scope: 'col' }, 'Image') : null, head)), el('tbody', {}, body))));
    if (rows.length < state.items.length) {
      tableBox.append(el('p', { class: 'small' }, `${state.items.length - rows.length} row(s) of this page hidden by the maximum score.`));
    }
  }
  const prev = el('button', { type: 'button', id: 'anomaly-prev', disabled: state.page === 0,
    onclick: () => { state.page--; load(); } }, '← Previous');
  const next = el('button', { type: 'button', id: 'anomaly-next', disabled: !state.next,
    onclick: () => { state.cursors[state.page + 1] = state.next; state.page++; load(); } }, 'Next →');
  pager.append(prev, el('span', {}, ` page ${state.page + 1} `), next);
}
