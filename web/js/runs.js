// runs.js — training runs from the database (GET /v1/runs...): the list,
// then for one run its config, a chart per metric over epochs (one line per
// split; another run can be overlaid, dashed), the confusion matrix with
// per-class recall of the best epoch (GET /v1/runs/{id}/confusion; runs
// trained before the matrices were stored fall back to their recall_<k>
// rows), its checkpoints, and the report tables when runs have test metrics.
import { api, models } from './api.js';
import { el, clear, fmt, fmtTime, notice, card, table, chart, destroyCharts, markdown, PALETTE } from './ui.js';

let root = null, listBox = null, detailBox = null, runsCache = [];
const state = { run: null, other: null, filter: '' };

// Shown first, in this order; every other metric follows alphabetically.
const KEY_METRICS = ['loss', 'loss_total', 'loss_cls', 'loss_red', 'loss_hk', 'loss_vib', 'loss_lsi', 'loss_ce', 'loss_ac',
  'loss_es', 'ce', 'accuracy', 'known_accuracy', 'anomaly_auc', 'auc_macro', 'z_log_mse', 'z_nmad', 'lr', 'lr_backbone',
  'lr_head', 'rho', 'margin', 'm', 'tuner_rho', 'tuner_margin'];

export function show(section, args) {
  if (!root) {
    root = section;
    listBox = el('div', {}, 'Loading…');
    detailBox = el('div', { id: 'run-detail' });
    section.append(el('h2', {}, 'Training runs'), card('Runs in the database', listBox), detailBox,
      el('div', { id: 'run-reports' }));
  }
  const wanted = args && /^[1-9][0-9]*$/.test(args[0] || '') ? Number(args[0]) : null;
  loadList(wanted);
}

async function loadList(wanted) {
  const r = await api('/v1/runs?limit=200');
  clear(listBox);
  if (!r.ok) { listBox.append(notice(r.status === 404 ? 'na' : 'error', 'Runs not available: ' + r.error)); return; }
  runsCache = r.data.items;
  if (!runsCache.length) {
    listBox.append(notice('na', 'No training runs in this database (galaxy-train writes them with --db).'));
    return;
  }
  listBox.append(table(['Run', 'Kind', 'Status', 'Started', 'Finished', 'Epochs', 'Seed', ''],
    runsCache.map((run) => [
      String(run.id), run.model_kind, el('span', { class: 'status-' + run.status }, run.status),
      fmtTime(run.started_at), fmtTime(run.finished_at),
      run.last_epoch === null ? '0' : String(run.last_epoch + 1), run.seed === null ? '—' : String(run.seed),
      el('button', { type: 'button', class: 'run-open', dataset: { run: run.id },
        onclick: () => { location.hash = '#runs/' + run.id; } }, 'Open')]), { class: 'runs-table' }));
  const known = (id) => runsCache.some((r) => r.id === id);
  const pick = [wanted, state.run].find((id) => id && known(id)) || runsCache[0].id;
  if (wanted && !known(wanted)) listBox.append(notice('na', `Run ${wanted} is not among the newest runs listed.`));
  openRun(pick, state.other);
  loadReports();
}

async function openRun(id, otherId) {
  state.run = id;
  state.other = otherId && otherId !== id ? otherId : null;
  const [run, met, ck, other] = await Promise.all([
    api(`/v1/runs/${id}`), api(`/v1/runs/${id}/metrics`), api(`/v1/runs/${id}/checkpoints`),
    state.other ? api(`/v1/runs/${state.other}/metrics`) : Promise.resolve(null)]);
  destroyCharts(detailBox);
  clear(detailBox);
  if (!run.ok) { detailBox.append(notice('error', `Run ${id}: ${run.error}`)); return; }
  if (!met.ok) { detailBox.append(notice('error', `Metrics of run ${id}: ${met.error}`)); return; }
  const otherSeries = other && other.ok ? other.data.series : null;
  detailBox.append(
    card(`Run ${id}: ${run.data.model_kind}, ${run.data.status}`, runSummary(run.data)),
    card('Compare', compareControls(id)),
    await confusionCard(run.data, met.data.series, ck.ok ? ck.data.items : []),
    card('Metrics over epochs', metricCharts(met.data.series, otherSeries)),
    card('Checkpoints', ck.ok ? checkpointTable(ck.data.items) : notice('error', ck.error)));
}

function runSummary(run) {
  return el('div', {},
    el('p', {}, `Started ${fmtTime(run.started_at)}`, run.finished_at ? `, finished ${fmtTime(run.finished_at)}` : '',
      `, seed ${run.seed === null ? '—' : run.seed}`, run.git_commit ? `, commit ${run.git_commit.slice(0, 10)}` : ''),
    run.command_line ? el('p', { class: 'small' }, el('code', {}, run.command_line)) : null,
    el('details', {}, el('summary', {}, 'Config'), el('pre', {}, JSON.stringify(run.config, null, 2))));
}

function compareControls(id) {
  const sel = el('select', { id: 'run-compare', 'aria-label': 'overlay another run' },
    el('option', { value: '' }, '— none —'),
    runsCache.filter((r) => r.id !== id).map((r) => el('option', { value: r.id, selected: r.id === state.other },
      `run ${r.id} (${r.model_kind}, ${r.status})`)));
  sel.addEventListener('change', () => openRun(id, sel.value ? Number(sel.value) : null));
  const filter = el('input', { type: 'search', id: 'metric-filter', placeholder: 'filter metrics', value: state.filter });
  filter.addEventListener('input', () => {
    state.filter = filter.value.trim().toLowerCase();
    for (const box of detailBox.querySelectorAll('.metric-chart')) {
      box.hidden = !!state.filter && !box.dataset.metric.toLowerCase().includes(state.filter);
    }
  });
  return el('div', { class: 'controls' }, el('label', {}, 'Overlay run ', sel), ' ', el('label', {}, 'Show ', filter));
}

// Groups series into charts: a metric name is one chart (a line per split),
// except numbered families (recall_0..recall_9, z_bin0_bias.., task_weight_00..)
// which share one chart titled with '#' for the number (a line per member and
// split), so ten recalls are one readable chart rather than ten.
function chartGroups(series) {
  const family = (name) => name.replace(/\d+/g, '#');
  const members = new Map();
  for (const s of series || []) {
    const f = family(s.name);
    if (!members.has(f)) members.set(f, new Set());
    members.get(f).add(s.name);
  }
  const out = new Map();
  for (const s of series || []) {
    const f = family(s.name);
    const title = f !== s.name && members.get(f).size > 1 ? f : s.name;
    if (!out.has(title)) out.set(title, []);
    out.get(title).push(s);
  }
  return out;
}

function metricOrder(names) {
  const rank = (n) => { const i = KEY_METRICS.indexOf(n); return i < 0 ? KEY_METRICS.length : i; };
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b, 'en', { numeric: true }));
}

function metricCharts(series, otherSeries) {
  const mine = chartGroups(series), theirs = chartGroups(otherSeries);
  if (!mine.size) return notice('na', 'This run has no metrics yet.');
  const grid = el('div', { class: 'grid charts' });
  const splits = [...new Set((series || []).map((s) => s.split))].sort();
  for (const title of metricOrder(mine.keys())) {
    const datasets = [];
    const family = title.includes('#');
    const add = (list, run, dashed) => {
      (list || []).forEach((s, i) => {
        const color = PALETTE[(family ? i : splits.indexOf(s.split)) % PALETTE.length] || '#666';
        const label = (family ? `${s.name} ` : '') + s.split + (dashed ? ` (run ${run})` : '');
        datasets.push({ label, borderColor: color, backgroundColor: color, borderDash: dashed ? [6, 4] : undefined,
          pointRadius: 2, spanGaps: true, data: s.epochs.map((e, k) => ({ x: e + 1, y: s.values[k] })) });
      });
    };
    add(mine.get(title), state.run, false);
    add(theirs.get(title), state.other, true);
    const box = el('div', { class: 'metric-chart', dataset: { metric: title } }, chart({
      type: 'line', data: { datasets },
      options: { scales: { x: { type: 'linear', title: { display: true, text: 'epoch' }, ticks: { precision: 0 } } },
        plugins: { title: { display: true, text: title }, legend: { position: 'bottom', labels: { boxWidth: 12 } } } },
    }, family ? 260 : 200));
    if (state.filter && !title.toLowerCase().includes(state.filter)) box.hidden = true;
    grid.append(box);
  }
  return grid;
}

// The best checkpoint's epoch (the newest "best" row), else the last epoch.
function bestEpoch(checkpoints, series) {
  const best = checkpoints.filter((c) => c.kind === 'best').sort((a, b) => b.epoch - a.epoch || b.id - a.id)[0];
  if (best) return { epoch: best.epoch, why: 'best checkpoint' };
  const last = Math.max(-1, ...series.map((s) => s.epochs[s.epochs.length - 1]));
  return { epoch: last, why: 'last epoch (no best checkpoint recorded)' };
}

// The confusion matrix of the best epoch (the server picks it: the best
// checkpoint's epoch, else the last one with a matrix), one split at a time.
async function confusionCard(run, series, checkpoints, split) {
  const q = new URLSearchParams({ epoch: 'best' });
  if (split) q.set('split', split);
  const r = await api(`/v1/runs/${run.id}/confusion?${q}`);
  if (!r.ok && r.status === 404) {
    return recallCard(run, series, checkpoints,
      'This run has no stored confusion matrix (runs trained before galaxy-train stored them); ' +
      'the recall of each class (its diagonal over its row) is shown instead.');
  }
  if (!r.ok) return card('Confusion matrix', notice('error', 'Confusion matrix not available: ' + r.error));
  const c = r.data;
  const why = { best_checkpoint: 'best checkpoint', last_epoch: 'last epoch with a matrix (no best checkpoint)',
    requested: 'requested' }[c.epoch_source] || c.epoch_source;
  const box = card(`Confusion matrix, ${c.split} split, epoch ${c.epoch + 1} (${why})`);
  box.id = 'confusion-card';
  if (c.splits.length > 1) {
    const sel = el('select', { id: 'confusion-split', 'aria-label': 'split of the confusion matrix' },
      c.splits.map((sp) => el('option', { value: sp, selected: sp === c.split }, sp)));
    sel.addEventListener('change', async () => box.replaceWith(await confusionCard(run, series, checkpoints, sel.value)));
    box.append(el('div', { class: 'controls' }, el('label', {}, 'Split ', sel)));
  }
  box.append(el('p', { class: 'small' }, `Rows: true class; columns: predicted class (hover a number for its name). `,
    `Shade: the share of the row. ${c.n.toLocaleString('en')} samples, accuracy ${fmt(c.accuracy)}.`),
  confusionTable(c));
  return box;
}

function confusionTable(c) {
  const k = c.classes.length;
  const head = el('tr', {}, el('th', { scope: 'col', class: 'corner' }, 'true ↓ predicted →'),
    c.classes.map((name, j) => el('th', { scope: 'col', title: name }, String(j))),
    el('th', { scope: 'col', class: 'recall' }, 'recall'));
  const rows = c.matrix.map((row, t) => {
    const sum = c.support[t];
    return el('tr', {}, el('th', { scope: 'row' }, `${t} ${c.classes[t]}`),
      row.map((v, p) => {
        const share = sum ? v / sum : 0;
        // Shade by the row share: the diagonal is how often the class is
        // found, the rest of the row where it goes instead.
        return el('td', { class: 'cell' + (t === p ? ' diag' : ''), title: `${c.classes[t]} → ${c.classes[p]}: ${v}` +
          (sum ? ` (${(100 * share).toFixed(1)}% of the row)` : ''),
        style: v ? `background: rgba(51, 102, 204, ${(0.08 + 0.85 * share).toFixed(3)}); color: ${share > 0.5 ? '#fff' : 'inherit'}`
          : undefined }, String(v));
      }),
      el('td', { class: 'recall' }, c.recall[t] === null ? '—' : c.recall[t].toFixed(3)));
  });
  return el('div', { class: 'table-wrap' }, el('table', { class: 'confusion', 'data-classes': k },
    el('thead', {}, head), el('tbody', {}, rows)));
}

async function recallCard(run, series, checkpoints, why0) {
  const { epoch, why } = bestEpoch(checkpoints, series);
  const splitPref = ['test', 'val', 'target', 'train'];
  const recall = series.filter((s) => /^recall_\d+$/.test(s.name));
  const split = splitPref.find((sp) => recall.some((s) => s.split === sp && s.epochs.includes(epoch)));
  if (!split) return card('Confusion matrix', notice('na', 'Not available: this run stores no confusion matrix and no per-class recall.'));
  const rows = recall.filter((s) => s.split === split)
    .map((s) => ({ k: Number(s.name.slice(7)), v: s.values[s.epochs.indexOf(epoch)] }))
    .filter((r) => r.v !== undefined).sort((a, b) => a.k - b.k);
  // Class names from a served model of this run's kind with as many classes
  // (run_id alone is ambiguous: it is the id in the trainer's database).
  const mods = await models();
  const fits = mods.list.filter((x) => x.kind === run.model_kind && x.n_classes === rows.length);
  const m = fits.find((x) => x.run_id === run.id) || fits[0];
  const label = (k) => (m && m.classes[k]) || `class ${k}`;
  return card(`Per-class recall, ${split} split, epoch ${epoch + 1} (${why})`,
    el('p', { class: 'small' }, why0),
    el('div', { id: 'recall-chart' }, chart({ type: 'bar', data: { labels: rows.map((r) => label(r.k)),
      datasets: [{ label: 'recall', data: rows.map((r) => r.v), backgroundColor: '#3366cc' }] },
    options: { indexAxis: 'y', scales: { x: { min: 0, max: 1 } }, plugins: { legend: { display: false } } } },
    Math.max(160, rows.length * 22))));
}

function checkpointTable(items) {
  if (!items.length) return notice('na', 'No checkpoints recorded.');
  return table(['Epoch', 'Kind', 'Path', 'sha256', 'Metrics', 'Written'], items.map((c) => [
    String(c.epoch + 1), c.kind, el('code', { title: c.path }, c.path.split('/').pop()),
    el('code', { title: c.sha256 }, c.sha256.slice(0, 12)),
    el('span', { class: 'wrap' }, Object.entries(c.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(' · ') || '—'),
    fmtTime(c.created_at)]));
}

// The report tables. bias and compare read test metrics (galaxy-train eval
// --db), so only wavelet-mamba runs that have some are asked for; the uda
// table reads each finished uda run at its best epoch. A database without
// either shows a sentence instead of a failed request.
async function loadReports() {
  const box = clear(root.querySelector('#run-reports'));
  const details = await Promise.all(runsCache.slice(0, 50).map((r) => api(`/v1/runs/${r.id}`)));
  const wm = details.filter((d) => d.ok && d.data.model_kind === 'wavelet-mamba' &&
    d.data.series.some((s) => s.split === 'test')).map((d) => d.data.id).sort((a, b) => a - b);
  const uda = runsCache.filter((r) => r.model_kind === 'uda' && r.status === 'finished').map((r) => r.id).sort((a, b) => a - b);
  const out = card('Reports');
  box.append(out);
  const tables = [];
  if (wm.length) tables.push(['bias', 'Photo-z bias correction', wm], ['compare', 'Model comparison', wm]);
  else out.append(notice('na', 'Bias-correction and comparison tables not available: no wavelet-mamba run has test ' +
    'metrics yet (galaxy-train eval --db stores them).'));
  if (uda.length) tables.push(['uda', 'Domain adaptation (DeepAstroUDA)', uda]);
  else out.append(notice('na', 'Adaptation table not available: no finished uda run.'));
  const tm = runsCache.filter((r) => r.model_kind === 'two-models' && r.status === 'finished').map((r) => r.id).sort((a, b) => a - b);
  if (tm.length) tables.push(['two-models', 'Two-models checks (CF-INN)', tm]);
  else out.append(notice('na', 'Two-models table not available: no finished galaxy-train two-models run.'));
  for (const [kind, title, ids] of tables) {
    const r = await api(`/v1/reports/${kind}?runs=${ids.join(',')}`);
    out.append(el('h4', {}, title), r.ok ? markdown(r.data) : notice(r.status === 404 ? 'na' : 'error', `${title}: ${r.error}`));
  }
}
