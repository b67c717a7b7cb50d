// prom.js — the Prometheus text exposition format (what GET /metrics
// answers) parsed in the browser, plus the two computations the overview
// needs: a quantile from histogram buckets and a rate between two scrapes.

// One sample per line: name{label="v",...} value. Comments and blank lines
// are skipped; label values may hold escaped quotes.
export function parseProm(text) {
  const out = [];
  for (const line of String(text).split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let lm;
    while ((lm = re.exec(m[3] || '')) !== null) labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

const matches = (labels, filter) => Object.entries(filter || {}).every(([k, v]) => labels[k] === v);

// Sum of every sample of a metric whose labels contain filter.
export function sum(samples, name, filter) {
  return samples.filter((s) => s.name === name && matches(s.labels, filter)).reduce((a, s) => a + s.value, 0);
}

// Distinct values of one label of a metric.
export function labelValues(samples, name, label) {
  return [...new Set(samples.filter((s) => s.name === name && label in s.labels).map((s) => s.labels[label]))];
}

// q-quantile of histogram `name` (the _bucket series, summed over every
// label but le after filtering), linearly interpolated inside the bucket as
// Prometheus' histogram_quantile does. NaN when there are no observations.
export function histogramQuantile(samples, name, q, filter) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== name + '_bucket' || !matches(s.labels, filter)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  if (!buckets.length) return NaN;
  const total = buckets[buckets.length - 1][1];
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;   // beyond the last finite bound: report it
      const inBucket = count - prevCount;
      return inBucket > 0 ? prevLe + (le - prevLe) * ((rank - prevCount) / inBucket) : le;
    }
    prevLe = le, prevCount = count;
  }
  return prevLe;
}

// Per-second rate of a counter between two scrapes (null on the first, or
// after a restart made the counter go down).
export function rate(prev, cur, name, filter) {
  if (!prev) return null;
  const dt = (cur.t - prev.t) / 1000;
  const d = sum(cur.samples, name, filter) - sum(prev.samples, name, filter);
  return dt > 0 && d >= 0 ? d / dt : null;
}
