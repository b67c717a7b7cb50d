// overview.js — server status (/healthz, /readyz), the models being served
// (/v1/models) and live serving numbers parsed from /metrics: throughput
// (rates between two scrapes), latency percentiles per route (histogram
// buckets), queue depth per model. Refreshes every REFRESH_MS while shown.
import { api, models } from './api.js';
import { parseProm, sum, labelValues, histogramQuantile, rate } from './prom.js';
import { el, clear, fmt, fmtMs, notice, card, table, chart, hasChart } from './ui.js';

const REFRESH_MS = 3000;
const HISTORY = 60;        // points of the throughput chart (3 minutes)
let timer = null, root = null, prev = null, tputChart = null;
const history = { t: [], img: [], req: [] };

export function show(section) {
  if (!root) build(section);
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

export function hide() {
  clearInterval(timer);
  timer = null;
}

function build(section) {
  root = section;
  section.append(
    el('h2', {}, 'Overview'),
    el('div', { class: 'grid' },
      card('Server', el('div', { id: 'ov-status' }, 'Loading…')),
      card('Throughput', el('div', { id: 'ov-tput' }, 'Loading…'), el('div', { id: 'ov-tput-chart' }))),
    card('Queues by model', el('div', { id: 'ov-queue' }, 'Loading…')),
    card('Latency by route (from /metrics)', el('div', { id: 'ov-latency' }, 'Loading…')),
    card('Models', el('div', { id: 'ov-models' }, 'Loading…')),
    el('p', { class: 'small' }, `Refreshed every ${REFRESH_MS / 1000} s while this page is shown.`));
  const box = section.querySelector('#ov-tput-chart');
  if (hasChart()) {
    const node = chart({
      type: 'line',
      data: { labels: history.t, datasets: [
        { label: 'images/s', data: history.img, borderColor: '#3366cc', backgroundColor: '#3366cc', pointRadius: 2, tension: 0.2 },
        { label: 'requests/s', data: history.req, borderColor: '#dc3912', backgroundColor: '#dc3912', pointRadius: 2, tension: 0.2 }] },
      options: { scales: { y: { beginAtZero: true } }, plugins: { legend: { position: 'bottom' } } },
    }, 160);
    box.append(node);
    tputChart = window.Chart.getChart(node.querySelector('canvas'));
  }
}

async function refresh() {
  const [health, ready, met, mods] = await Promise.all([
    api('/healthz'), api('/readyz'), api('/metrics'), models(0)]);
  if (!root) return;
  renderStatus(health, ready);
  renderModels(mods);
  if (!met.ok) {
    for (const id of ['ov-tput', 'ov-queue', 'ov-latency']) {
      clear(root.querySelector('#' + id)).append(notice('error', 'Metrics not available: ' + met.error));
    }
    return;
  }
  const cur = { t: Date.now(), samples: parseProm(met.data) };
  renderThroughput(cur);
  renderQueue(cur);
  renderLatency(cur);
  prev = cur;
}

function renderStatus(health, ready) {
  const box = clear(root.querySelector('#ov-status'));
  const dot = (ok) => el('span', { class: 'dot ' + (ok ? 'ok' : 'bad') }, ok ? '●' : '●');
  box.append(
    el('div', {}, dot(health.ok), ' Live (/healthz): ', health.ok ? 'ok' : health.error),
    el('div', {}, dot(ready.ok), ' Ready (/readyz): ',
      ready.ok ? `ready, ${ready.data.models} model(s)` : ready.error));
}

function renderModels(mods) {
  const box = clear(root.querySelector('#ov-models'));
  if (!mods.ok) { box.append(notice('error', 'Models not available: ' + mods.error)); return; }
  if (!mods.list.length) { box.append(notice('na', 'No model is loaded.')); return; }
  const metricKeys = ['accuracy', 'auc_macro', 'z_log_mse', 'z_nmad', 'z_outlier_rate', 'n_test'];
  box.append(table(['Name', 'Kind', 'Version', 'Device', 'Parameters', 'Input', 'Classes', 'Test metrics'],
    mods.list.map((m) => [
      el('span', {}, m.name, m.default ? el('span', { class: 'tag' }, 'default') : null),
      m.kind, el('code', { title: m.version }, m.version.slice(0, 12)), m.device,
      fmt(m.n_params), `${m.input_size}×${m.input_size}`, String(m.n_classes),
      metricKeys.some((k) => k in (m.test_metrics || {}))
        ? metricKeys.filter((k) => k in m.test_metrics).map((k) => `${k} ${fmt(m.test_metrics[k])}`).join(' · ')
        : 'none recorded',
    ])));
}

function renderThroughput(cur) {
  const img = rate(prev, cur, 'galaxyd_images_processed_total');
  const req = rate(prev, cur, 'galaxyd_requests_total');
  const box = clear(root.querySelector('#ov-tput'));
  // A rate needs two scrapes: the first refresh can only say so.
  box.append(el('div', { class: 'big' }, img === null ? '—' : fmt(img, 1),
    el('span', { class: 'unit' }, img === null ? ' images/s (measuring…)' : ' images/s')),
    el('div', {}, 'Requests: ', req === null ? '—' : fmt(req, 1) + '/s', ' · in flight: ',
      fmt(sum(cur.samples, 'galaxyd_inflight_requests')),
      ' · total images: ', fmt(sum(cur.samples, 'galaxyd_images_processed_total'))));
  if (img === null) return;
  history.t.push(new Date(cur.t).toLocaleTimeString('en-GB'));
  history.img.push(img);
  history.req.push(req);
  for (const a of Object.values(history)) if (a.length > HISTORY) a.shift();
  if (tputChart) tputChart.update('none');
}

function renderQueue(cur) {
  const box = clear(root.querySelector('#ov-queue'));
  const names = labelValues(cur.samples, 'galaxyd_queue_depth', 'model');
  if (!names.length) { box.append(notice('na', 'No queue (no model loaded).')); return; }
  box.append(table(['Model', 'Waiting now', 'Rejected (queue full)', 'Timed out', 'Mean batch size'], names.map((m) => {
    const f = { model: m };
    const batches = sum(cur.samples, 'galaxyd_batch_size_count', f);
    return [m, fmt(sum(cur.samples, 'galaxyd_queue_depth', f)), fmt(sum(cur.samples, 'galaxyd_queue_rejected_total', f)),
      fmt(sum(cur.samples, 'galaxyd_queue_timeouts_total', f)),
      batches ? fmt(sum(cur.samples, 'galaxyd_batch_size_sum', f) / batches, 2) : '—'];
  })));
}

function renderLatency(cur) {
  const box = clear(root.querySelector('#ov-latency'));
  const name = 'galaxyd_request_duration_seconds';
  const routes = labelValues(cur.samples, name + '_count', 'route')
    .filter((r) => sum(cur.samples, name + '_count', { route: r }) > 0)
    .sort((a, b) => (a.startsWith('/v1/') ? 0 : 1) - (b.startsWith('/v1/') ? 0 : 1) || a.localeCompare(b));
  if (!routes.length) { box.append(notice('na', 'No requests measured yet.')); return; }
  box.append(table(['Route', 'Requests', 'p50', 'p90', 'p99'], routes.map((r) => {
    const f = { route: r };
    return [el('code', {}, r), fmt(sum(cur.samples, name + '_count', f)),
      fmtMs(histogramQuantile(cur.samples, name, 0.5, f)), fmtMs(histogramQuantile(cur.samples, name, 0.9, f)),
      fmtMs(histogramQuantile(cur.samples, name, 0.99, f))];
  })));
  box.append(el('p', { class: 'small' }, 'Percentiles are interpolated inside histogram buckets, since the server started.'));
}

