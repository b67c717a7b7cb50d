// api.js — every request of the dashboard goes through api(): it adds the
// API key (when one is saved), never throws for HTTP errors, and turns the
// API's {"error": {"code", "message"}} bodies into one sentence to show.

const KEY = 'galaxyd.api_key';

export function apiKey() {
  try { return localStorage.getItem(KEY) || ''; } catch (e) { return ''; }
}

export function setApiKey(k) {
  try { if (k) localStorage.setItem(KEY, k); else localStorage.removeItem(KEY); } catch (e) { /* private mode */ }
}

// The message of an error body, else the status line: what a person reads.
function errorText(status, statusText, body) {
  let msg = '';
  if (body && typeof body === 'object' && body.error) {
    msg = typeof body.error === 'string' ? body.error : (body.error.message || body.error.code || '');
  }
  if (!msg && typeof body === 'string' && body.length < 300) msg = body.trim();
  const what = {
    400: 'the request was refused', 401: 'an API key is needed (set it under "API key")',
    404: 'not available', 413: 'the file is too large', 415: 'this file type is not accepted',
    422: 'the image could not be decoded', 503: 'temporarily unavailable',
    504: 'the server took too long',
  }[status] || (status >= 500 ? 'server error' : 'request failed');
  return `${what} (HTTP ${status}${msg ? ': ' + msg : ''})`;
}

// Returns {ok, status, data (parsed JSON or text), error (a sentence), headers}.
// opts: {method, body, type (Content-Type), accept: 'json'|'text'}.
export async function api(path, opts = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers['Authorization'] = 'Bearer ' + key;
  if (opts.type) headers['Content-Type'] = opts.type;
  let res;
  try {
    res = await fetch(path, { method: opts.method || 'GET', body: opts.body, headers, cache: 'no-store' });
  } catch (e) {
    return { ok: false, status: 0, data: null, error: `cannot reach galaxyd (${e.message})`, headers: null };
  }
  const ctype = res.headers.get('Content-Type') || '';
  let data = null;
  try {
    data = ctype.includes('json') ? await res.json() : await res.text();
  } catch (e) {
    data = null;
  }
  return {
    ok: res.ok, status: res.status, data, headers: res.headers,
    error: res.ok ? '' : errorText(res.status, res.statusText, data),
  };
}

// The models being served (cached for a few seconds: every view asks).
let modelsCache = { at: 0, value: null };
export async function models(maxAgeMs = 3000) {
  if (modelsCache.value && Date.now() - modelsCache.at < maxAgeMs) return modelsCache.value;
  const r = await api('/v1/models');
  const value = { ok: r.ok, error: r.error, list: r.ok && r.data && Array.isArray(r.data.models) ? r.data.models : [] };
  modelsCache = { at: Date.now(), value };
  return value;
}

export function modelOfKind(list, kind) {
  return list.find((m) => m.kind === kind) || null;
}
