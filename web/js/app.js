// app.js — the dashboard's entry point: routes the URL hash to a view
// (each a module with show(section) and an optional hide()), and keeps the
// API key form. A view is built the first time it is shown and refreshed
// when shown again; only the visible view polls the server.
import { apiKey, setApiKey } from './api.js';
import * as overview from './overview.js';
import * as runs from './runs.js';
import * as inspect from './inspect.js';
import * as anomalies from './anomalies.js';

const VIEWS = { overview, runs, inspect, anomalies };
let current = null;

function route() {
  const [name, ...rest] = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
  const view = VIEWS[name] ? name : 'overview';
  if (current && current !== view && VIEWS[current].hide) VIEWS[current].hide();
  for (const v of Object.keys(VIEWS)) document.getElementById('view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  current = view;
  VIEWS[view].show(document.getElementById('view-' + view), rest.map(decodeURIComponent));
}

function keyForm() {
  const input = document.getElementById('key-input');
  input.value = apiKey();
  document.getElementById('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setApiKey(input.value.trim());
    input.closest('details').open = false;
    route();
  });
}

keyForm();
window.addEventListener('hashchange', route);
route();
