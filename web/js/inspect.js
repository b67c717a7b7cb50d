// inspect.js — one galaxy through every model that can answer about it:
// class probabilities and redshift (POST /v1/classify, with ?morph=1 for
// the morphology statistics), the anomaly score against the model's
// threshold (POST /v1/anomaly, when a uda model is loaded) and the
// counterfactual grid for every class (POST /v1/counterfactuals
// targets=all, when a cf-inn model is loaded), with overlay and difference
// views. A model that is not loaded is said in words, not requested.
import { api, models, modelOfKind } from './api.js';
import { el, clear, fmt, notice, card, table, chart, destroyCharts, progress, PALETTE } from './ui.js';
import { fitsCanvas } from './fits.js';

let root = null, out = null, examplesBox = null, cfView = 'cf';

export function show(section) {
  if (root) return;
  root = section;
  const input = el('input', { type: 'file', id: 'inspect-file', accept: '.png,.jpg,.jpeg,.fits,.fit,.fts,image/png,image/jpeg,application/fits' });
  input.addEventListener('change', () => { if (input.files[0]) run(input.files[0]); });
  const drop = el('label', { class: 'drop', for: 'inspect-file' },
    el('strong', {}, 'Drop a PNG, JPEG or FITS cutout here'), ' or click to pick one.', input);
  for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('over'); });
  for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) run(f);
  });
  examplesBox = el('div', { class: 'examples' }, 'Loading examples…');
  out = el('div', { id: 'inspect-out' });
  section.append(el('h2', {}, 'Inspect a galaxy'), card(null, drop, el('h4', {}, 'Or try an example'), examplesBox), out);
  loadExamples();
}

async function loadExamples() {
  const r = await api('examples/index.json');
  clear(examplesBox);
  if (!r.ok || !r.data || !Array.isArray(r.data.examples)) { examplesBox.append(notice('na', 'No bundled examples.')); return; }
  for (const ex of r.data.examples) {
    examplesBox.append(el('button', { type: 'button', class: 'example', title: ex.class_name,
      onclick: async () => {
        const res = await fetch('examples/' + ex.file);
        const blob = await res.blob();
        run(new File([blob], ex.file, { type: 'image/png' }));
      } }, el('img', { src: 'examples/' + ex.file, alt: ex.class_name, width: 64, height: 64 }),
      el('span', {}, ex.class_name)));
  }
}

function mediaType(file) {
  const n = file.name.toLowerCase();
  if (/\.(fits?|fts)$/.test(n)) return 'application/fits';
  if (/\.jpe?g$/.test(n)) return 'image/jpeg';
  if (/\.png$/.test(n)) return 'image/png';
  return file.type || 'application/octet-stream';
}

async function preview(file, type) {
  if (type === 'application/fits') {
    try {
      const c = fitsCanvas(await file.arrayBuffer());
      c.className = 'cutout';
      return c;
    } catch (e) {
      return notice('na', `Preview not available (${e.message}); the server decodes the file itself.`);
    }
  }
  return el('img', { class: 'cutout', src: URL.createObjectURL(file), alt: file.name });
}

async function run(file) {
  destroyCharts(out);
  clear(out);
  const type = mediaType(file);
  const body = await file.arrayBuffer();
  const mods = await models(0);
  out.append(el('div', { class: 'grid' }, card(`Input: ${file.name}`, await preview(file, type),
    el('p', { class: 'small' }, `${type}, ${fmt(file.size)} bytes`))));
  if (!mods.ok) { out.append(notice('error', 'Models not available: ' + mods.error)); return; }
  const clsBox = card('Classification'), anoBox = card('Anomaly score'), morphBox = card('Morphology');
  const cfBox = card('Counterfactuals: this galaxy as every class');
  out.firstChild.append(clsBox, anoBox);
  out.append(morphBox, cfBox);
  await Promise.all([classify(clsBox, morphBox, body, type, mods.list), anomaly(anoBox, body, type, mods.list),
    counterfactuals(cfBox, body, type, mods.list)]);
}

async function classify(box, morphBox, body, type, list) {
  const p = progress('Classifying…');
  box.append(p.node);
  // The classifier with a redshift head: the default model when it is a
  // wavelet-mamba, else the first one (other kinds answer no redshift).
  const wm = list.find((x) => x.default && x.kind === 'wavelet-mamba') || modelOfKind(list, 'wavelet-mamba');
  const q = wm ? `&model=${encodeURIComponent(wm.name)}` : '';
  const r = await api('/v1/classify?morph=1' + q, { method: 'POST', body, type });
  p.done();
  if (!r.ok) {
    box.append(notice('error', 'Classification failed: ' + r.error));
    morphBox.append(notice('na', 'Morphology not available (the classification failed).'));
    return;
  }
  const d = r.data, probs = d.probs || [];
  // Class names in index order come from the model's entry (the keys of
  // "probabilities" are names, but a JSON object has no order to rely on).
  const m = list.find((x) => x.name === d.model);
  const names = probs.map((_, k) => (m && m.classes[k]) || `class ${k}`);
  box.append(
    el('p', { class: 'big' }, d.class_name, el('span', { class: 'unit' }, ` (p = ${fmt(probs[d.class_index])})`)),
    el('p', {}, 'Redshift: ', el('strong', { id: 'redshift' }, fmt(d.redshift, 4)),
      ` · model ${d.model} ${String(d.model_version).slice(0, 12)} · ${fmt(d.timing && d.timing.total_ms, 1)} ms`),
    chart({ type: 'bar', data: { labels: names, datasets: [{ label: 'probability', data: probs,
      backgroundColor: probs.map((_, k) => (k === d.class_index ? PALETTE[1] : PALETTE[0])) }] },
    options: { indexAxis: 'y', scales: { x: { min: 0, max: 1 } }, plugins: { legend: { display: false } } } },
    Math.max(180, probs.length * 22)),
    el('details', {}, el('summary', {}, 'Class probabilities table'),
      table(['#', 'Class', 'Probability'], names.map((n, k) => [String(k), n, fmt(probs[k], 4)]), { id: 'class-table' })));
  if (d.cf_inn) {
    box.append(el('p', { class: 'small' }, `The cf-inn model (${d.cf_inn.model || 'cf-inn'}) says ${d.cf_inn.class_name}`,
      Number.isFinite(d.cf_inn.log_likelihood) ? `, log-likelihood ${fmt(d.cf_inn.log_likelihood, 2)}` : '', '.'));
  }
  renderMorph(morphBox, d.morphology);
}

// classify?morph=1 adds {"morphology": {band, flag, flag_name, warnings,
// reason, statistics: {...}}} (statmorph's quantities); anything else in the
// object is listed too, so a new field shows up without a change here.
function renderMorph(box, m) {
  if (!m || typeof m !== 'object') {
    box.append(notice('na', 'Morphology statistics not available from this server.'));
    return;
  }
  const { statistics, band, flag, flag_name: flagName, warnings, reason, ...rest } = m;
  box.append(el('p', {}, band !== undefined ? `Measured on band: ${band}. ` : '',
    flagName !== undefined ? `Quality flag: ${flagName}${flag !== undefined ? ` (${flag})` : ''}. ` : '',
    reason ? `Reason: ${reason}. ` : '',
    Array.isArray(warnings) && warnings.length ? `Warnings: ${warnings.join('; ')}.` : ''));
  const rows = [];
  const walk = (prefix, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    else rows.push([prefix, Array.isArray(v) ? v.map((x) => fmt(x)).join(', ') : fmt(v, 4)]);
  };
  walk('', statistics || {});
  walk('', rest);
  box.append(el('div', { class: 'morph' }, table(['Statistic', 'Value'], rows, { id: 'morph-table' })));
}

async function anomaly(box, body, type, list) {
  const m = modelOfKind(list, 'uda');
  if (!m) { box.append(notice('na', 'Not available: no uda (DeepAstroUDA) model is loaded.')); return; }
  const p = progress('Scoring…');
  box.append(p.node);
  const r = await api(`/v1/anomaly?model=${encodeURIComponent(m.name)}`, { method: 'POST', body, type });
  p.done();
  if (!r.ok) { box.append(notice(r.status === 404 ? 'na' : 'error', 'Anomaly score: ' + r.error)); return; }
  const d = r.data;
  const score = d.score, thr = d.threshold ?? d.anomaly_threshold;
  const flagged = d.is_anomaly ?? (Number.isFinite(score) && Number.isFinite(thr) ? score > thr : null);
  box.append(
    el('p', { class: 'big' }, fmt(score, 3), el('span', { class: 'unit' }, ' of 1 (entropy / ln K)')),
    el('div', { class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 1, 'aria-valuenow': score },
      el('div', { class: 'fill', style: `width:${Math.max(0, Math.min(1, score)) * 100}%` }),
      Number.isFinite(thr) ? el('div', { class: 'mark', style: `left:${thr * 100}%`, title: 'threshold' }) : null),
    el('p', {}, `Threshold ${fmt(thr, 3)}: `, el('strong', {}, flagged === null ? '—' : flagged ? 'anomalous' : 'a known class'),
      d.class_name ? ` · nearest known class ${d.class_name}` : '', ` · model ${m.name}`));
}

// The per-target records of one input of a POST /v1/counterfactuals answer
// ({inputs: [{counterfactuals: [{target, target_name, url, overlay_url,
// diff_url, alpha, valid_*, msd, ssim}]}]}), with the URLs built from the
// result id when a field is absent.
function cfTargets(entry) {
  const id = entry.id;
  return (entry.counterfactuals || []).map((t) => {
    const k = t.target ?? t.class_index;
    const base = `/v1/counterfactuals/${id}/${k}`;
    return {
      k, name: t.target_name ?? t.class_name ?? `class ${k}`, t,
      png: t.url || `${base}.png`, overlay: t.overlay_url || `${base}/overlay.png`, diff: t.diff_url || `${base}/diff.png`,
    };
  });
}

// "α 0.80 · hidden ✓ · reencoded ✓ · independent —": the validity checks of
// one counterfactual (independent: what the wavelet-mamba classifier says,
// null when none is loaded).
function cfFacts(t) {
  const facts = [];
  if (t.alpha !== undefined && t.alpha !== null) facts.push(`α ${fmt(t.alpha, 2)}`);
  for (const [k, v] of Object.entries(t)) {
    if (!/^valid_/.test(k)) continue;
    facts.push(`${k.slice(6)} ${v === null ? '—' : v ? '✓' : '✗'}`);
  }
  if (t.ssim !== undefined) facts.push(`SSIM ${fmt(t.ssim, 3)}`);
  if (t.msd !== undefined) facts.push(`MSD ${fmt(t.msd, 4)}`);
  if (t.fallback) facts.push('fallback');
  return facts.join(' · ');
}

async function counterfactuals(box, body, type, list) {
  const m = modelOfKind(list, 'cf-inn');
  if (!m) { box.append(notice('na', 'Not available: no cf-inn model is loaded.')); return; }
  const p = progress(`Computing ${m.n_classes} counterfactuals…`);
  box.append(p.node);
  const r = await api(`/v1/counterfactuals?targets=all&model=${encodeURIComponent(m.name)}`, { method: 'POST', body, type });
  p.done();
  if (!r.ok) { box.append(notice(r.status === 404 ? 'na' : 'error', 'Counterfactuals: ' + r.error)); return; }
  const d = r.data, entry = (d.inputs && d.inputs[0]) || d, targets = cfTargets(entry);
  const src = entry.class_index, srcName = entry.class_name;
  const grid = el('div', { class: 'cf-grid', id: 'cf-grid' });
  const setView = (v) => {
    cfView = v;
    for (const img of grid.querySelectorAll('img')) img.src = img.dataset[v];
  };
  const toggle = el('div', { class: 'controls', role: 'radiogroup', 'aria-label': 'counterfactual view' },
    ['cf', 'overlay', 'diff'].map((v) => el('label', {}, el('input', { type: 'radio', name: 'cfview', value: v,
      checked: v === cfView, onchange: () => setView(v) }), ' ', { cf: 'counterfactual', overlay: 'overlay', diff: 'difference' }[v])));
  for (const t of targets) {
    const img = el('img', { src: t[cfView === 'cf' ? 'png' : cfView], alt: `as ${t.name}`, loading: 'eager',
      dataset: { cf: t.png, overlay: t.overlay, diff: t.diff } });
    // Hover shows the difference from the input; leaving restores the chosen view.
    img.addEventListener('mouseenter', () => { img.src = t.diff; });
    img.addEventListener('mouseleave', () => { img.src = img.dataset[cfView]; });
    grid.append(el('figure', { class: t.k === src ? 'source' : '' }, img,
      el('figcaption', {}, el('strong', {}, t.name), t.k === src ? ' (predicted)' : '', el('br'), cfFacts(t.t))));
  }
  const ref = el('div', { class: 'cf-grid cf-ref' },
    entry.input_url ? el('figure', {}, el('img', { src: entry.input_url, alt: 'input as the model sees it' }),
      el('figcaption', {}, el('strong', {}, 'input'))) : null,
    entry.reconstruction_url ? el('figure', {}, el('img', { src: entry.reconstruction_url, alt: 'reconstruction' }),
      el('figcaption', {}, el('strong', {}, 'reconstruction'), el('br'),
        entry.reconstruction ? `SSIM ${fmt(entry.reconstruction.ssim, 3)}` : '')) : null);
  box.append(el('p', {}, srcName !== undefined ? `Predicted class (cf-inn): ${srcName}. ` : '',
    'Hover a tile for its difference from the input (red brighter, blue darker), or switch the view:'),
  ref, toggle, grid);
  const gridUrl = entry.grid_url || d.grid_url;
  if (gridUrl) {
    box.append(el('p', { class: 'small' }, el('a', { href: gridUrl + '?scale=4', target: '_blank' }, 'The whole grid as one PNG'),
      d.expires_at ? ` · these images are kept until ${d.expires_at.replace('T', ' ')}` : ''));
  }
}
