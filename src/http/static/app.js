// Warren's web dashboard (issue 10): a single-page app over the RabbitMQ-compatible management
// API. Plain JavaScript, no framework, no build step, nothing fetched from outside: it is embedded
// in the broker binary and must work on a machine with no internet.
//
// Layout: hash routes (#/, #/queues, #/queues/VHOST/NAME, ...) each mount a view that builds its
// DOM once and then refreshes only the data parts every 5 s, so forms keep what the user typed.
// Lists are paged on the server (page, page_size, name, use_regex, sort, sort_reverse): the page
// never asks for a whole list, which keeps it instant with 100,000 queues. Elements carry stable
// ids and data-* attributes that the browser tests (tests/browser.rs) rely on: change them together.
'use strict';

const REFRESH_MS = 5000;
const WINDOW_MS = 10 * 60 * 1000;
// Ask for 10 minutes of 5 s samples where the server keeps them (RabbitMQ's parameters).
const SAMPLES_QS = 'lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5';
// The same for a connection's byte counters.
const DATA_QS = 'data_rates_age=600&data_rates_incr=5';

// ------------------------------------------------------------------------------------------
// Small DOM helpers
// ------------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el && el.textContent !== String(text)) el.textContent = text;
}

const enc = encodeURIComponent;

function get(obj, path) {
  let v = obj;
  for (const k of path.split('.')) {
    if (v === null || v === undefined) return undefined;
    v = v[k];
  }
  return v;
}

function fmtNum(n) {
  if (n === undefined || n === null || n === '') return '';
  if (typeof n !== 'number') return String(n);
  return n.toLocaleString('en-US', { maximumFractionDigits: 2 });
}

function fmtRate(n) {
  if (typeof n !== 'number') return '';
  return (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2)) + '/s';
}

function fmtBytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function fmtBool(b) { return b === true ? 'yes' : b === false ? 'no' : ''; }

function fmtArgs(a) {
  if (!a || typeof a !== 'object' || Object.keys(a).length === 0) return '';
  return Object.entries(a).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}

// The short names RabbitMQ's listings give the arguments they know, in the order shown.
const ARG_SHORT = {
  'alternate-exchange': 'AE', 'x-message-ttl': 'TTL', 'x-expires': 'Exp', 'x-max-length': 'Lim',
  'x-max-length-bytes': 'Lim B', 'x-delivery-limit': 'DlL', 'x-overflow': 'Ovfl',
  'x-dead-letter-exchange': 'DLX', 'x-dead-letter-routing-key': 'DLK', 'x-queue-master-locator': 'ML',
  'x-max-priority': 'Pri', 'x-single-active-consumer': 'SAC',
};

// A listing's Features cell: the flags that are set (`flags`: [[on, short, title]]), then
// one abbreviation per known argument (hover for its value), "Args" for the others, and
// the policies that apply. `x-queue-type` is left out: the Type column shows it. The
// shorts are also in data-features, for tests.
function featureBadges(o, flags) {
  const shown = [];
  const add = (short, title, cls) => shown.push(h('abbr', { title, class: cls || 'feature', text: short }));
  for (const [on, short, title] of flags) if (on) add(short, title);
  const args = o.arguments || {};
  for (const [k, short] of Object.entries(ARG_SHORT)) {
    if (k in args) add(short, `${k}: ${typeof args[k] === 'object' ? JSON.stringify(args[k]) : args[k]}`);
  }
  const rest = Object.fromEntries(Object.entries(args).filter(([k]) => !(k in ARG_SHORT) && k !== 'x-queue-type'));
  if (Object.keys(rest).length) add('Args', fmtArgs(rest));
  if (o.policy) add(o.policy, 'Policy: ' + o.policy, 'feature policy');
  if (o.operator_policy) add(o.operator_policy, 'Operator policy: ' + o.operator_policy, 'feature policy');
  const el = h('span', { dataset: { features: shown.map((e) => e.textContent).join(' ') } });
  shown.forEach((e, i) => { if (i) el.append(' '); el.append(e); });
  return el;
}

function toast(text, isError) {
  const box = document.getElementById('status');
  const msg = h('div', { class: 'msg' + (isError ? ' error' : ''), text });
  box.appendChild(msg);
  setTimeout(() => msg.remove(), isError ? 8000 : 4000);
}

// ------------------------------------------------------------------------------------------
// API access: Basic credentials live in sessionStorage (gone with the tab); a 401 anywhere
// sends the user back to the login page.
// ------------------------------------------------------------------------------------------

const session = {
  get auth() { return sessionStorage.getItem('warren.auth'); },
  get user() { return sessionStorage.getItem('warren.user') || ''; },
  set(user, pass) {
    // btoa takes Latin-1 only; encode UTF-8 first so non-ASCII passwords survive.
    const bytes = new TextEncoder().encode(user + ':' + pass);
    sessionStorage.setItem('warren.auth', btoa(String.fromCharCode(...bytes)));
    sessionStorage.setItem('warren.user', user);
  },
  clear() {
    sessionStorage.removeItem('warren.auth');
    sessionStorage.removeItem('warren.user');
    sessionStorage.removeItem('warren.tags');
  },
  // The logged-in user's tags (from /api/whoami), or null when not known.
  get tags() {
    try { return JSON.parse(sessionStorage.getItem('warren.tags')); } catch (_) { return null; }
  },
  setTags(t) {
    const list = Array.isArray(t) ? t : String(t || '').split(',').map((x) => x.trim()).filter(Boolean);
    sessionStorage.setItem('warren.tags', JSON.stringify(list));
  },
};

class ApiError extends Error {
  constructor(status, body, text) {
    const reason = body && (body.reason || body.error);
    super(reason ? `${status}: ${typeof reason === 'string' ? reason : JSON.stringify(reason)}` : `HTTP ${status}${text ? ': ' + text : ''}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body, opts) {
  opts = opts || {};
  const headers = { Authorization: 'Basic ' + (session.auth || '') };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  Object.assign(headers, opts.headers || {});
  // credentials 'omit': the Authorization header is ours, and without ambient credentials the
  // browser does not answer a 401's WWW-Authenticate with its own login dialog (which would
  // stall the page; our login page handles 401).
  const r = await fetch('/api' + path, { method, headers, body: payload, cache: 'no-store', credentials: 'omit' });
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  // RabbitMQ's 401 `not_authorized` is a failed login; `not_authorised` is a logged-in user
  // refused one call (issue 11's tags): that one stays on the page as an error.
  if (r.status === 401 && !opts.noRedirect && !(data && data.error === 'not_authorised')) {
    session.clear();
    goLogin();
    throw new ApiError(401, data, text);
  }
  if (!r.ok) throw new ApiError(r.status, data, text);
  return data;
}

function goLogin() {
  const here = location.hash;
  if (!here.startsWith('#/login')) {
    sessionStorage.setItem('warren.next', here || '#/');
    location.hash = '#/login';
  }
}

// ------------------------------------------------------------------------------------------
// Charts: our own line chart on <canvas>. The canvas carries data-points, data-last-KEY and
// data-max-KEY so that a test (or a curious operator) can read what is drawn.
// ------------------------------------------------------------------------------------------

class Chart {
  constructor(id, title, series, unit) {
    this.id = id;
    this.series = series; // [{key, label, color}]
    this.unit = unit; // 'rate' (messages/s), 'bytes' (bytes/s) or 'count'
    this.points = {};
    this.canvas = h('canvas', { id, width: 600, height: 180, dataset: { points: '0', draws: '0' } });
    this.legendValues = {};
    const legend = h('div', { class: 'legend' }, series.map((s) => {
      const v = h('span', { id: `${id}-${s.key}`, text: '' });
      this.legendValues[s.key] = v;
      return h('span', {}, h('i', { style: `background:${s.color}` }), s.label, ' ', v);
    }));
    this.el = h('div', { class: 'panel chart', id: id + '-panel' }, h('h2', { text: title }), this.canvas, legend);
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.canvas);
  }

  // points: {key: [[t_ms, value], ...]} oldest first.
  set(points) {
    this.points = points;
    let n = 0;
    for (const s of this.series) {
      const pts = points[s.key] || [];
      n = Math.max(n, pts.length);
      const last = pts.length ? pts[pts.length - 1][1] : 0;
      const max = pts.reduce((m, p) => Math.max(m, p[1]), 0);
      this.canvas.dataset['last' + camel(s.key)] = String(round2(last));
      this.canvas.dataset['max' + camel(s.key)] = String(round2(max));
      this.legendValues[s.key].textContent = this.unit === 'rate' ? fmtRate(last)
        : this.unit === 'bytes' ? fmtBytes(round2(last)) + '/s' : fmtNum(last);
    }
    this.canvas.dataset.points = String(n);
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, c.clientWidth || 600);
    const hgt = Math.max(100, c.clientHeight || 180);
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    const left = 56, right = 8, top = 8, bottom = 20;
    const pw = w - left - right, ph = hgt - top - bottom;
    const now = Date.now();
    const t0 = now - WINDOW_MS;
    let max = 0;
    for (const s of this.series) for (const p of this.points[s.key] || []) if (p[0] >= t0) max = Math.max(max, p[1]);
    const top_ = niceCeil(max);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#677085';
    g.strokeStyle = '#e3e6ec';
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath(); g.moveTo(left, Math.round(y) + 0.5); g.lineTo(left + pw, Math.round(y) + 0.5); g.stroke();
      const v = (top_ * i) / 4;
      g.fillText(this.unit === 'rate' ? shortNum(v) + '/s' : this.unit === 'bytes' ? shortBytes(v) + '/s' : shortNum(v), left - 4, y);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (let m = 10; m >= 0; m -= 2) {
      const x = left + pw * (1 - m / 10);
      g.fillText(m === 0 ? 'now' : `-${m}m`, x, top + ph + 4);
    }
    const xOf = (t) => left + (pw * (t - t0)) / WINDOW_MS;
    const yOf = (v) => top + ph - (ph * v) / top_;
    for (const s of this.series) {
      const pts = (this.points[s.key] || []).filter((p) => p[0] >= t0 - 5000);
      if (pts.length === 0) continue;
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      // Dashed series stay visible when they run on top of another (confirm over publish).
      g.setLineDash(s.dash || []);
      g.beginPath();
      pts.forEach((p, i) => {
        const x = Math.max(left, xOf(p[0])), y = yOf(p[1]);
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      if (pts.length === 1) g.lineTo(left + pw, yOf(pts[0][1]));
      g.stroke();
    }
    g.setLineDash([]);
    c.dataset.draws = String(Number(c.dataset.draws || 0) + 1);
  }

  dispose() { this.resizeObserver.disconnect(); }
}

function camel(key) {
  return key.split('_').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('');
}

function round2(v) { return Math.round(v * 100) / 100; }

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function shortBytes(v) {
  if (v >= 1 << 30) return round2(v / (1 << 30)) + 'G';
  if (v >= 1 << 20) return round2(v / (1 << 20)) + 'M';
  if (v >= 1 << 10) return round2(v / (1 << 10)) + 'k';
  return String(round2(v)) + 'B';
}

function shortNum(v) {
  if (v >= 1e9) return round2(v / 1e9) + 'G';
  if (v >= 1e6) return round2(v / 1e6) + 'M';
  if (v >= 1e3) return round2(v / 1e3) + 'k';
  return String(round2(v));
}

// Turns a stats object into chart points for `keys`. Where the server sent RabbitMQ's
// `KEY_details.samples` (newest first, cumulative counters or levels) those are used; otherwise
// the view's own history of the plain counters, one entry per refresh, is (so the chart works
// against a server that keeps no samples, and moves within one refresh of traffic starting).
class History {
  constructor(keys, kind) {
    this.keys = keys;
    this.kind = kind; // 'rate': counters to differentiate; 'count': levels to draw as they are
    this.ring = [];
  }

  points(stats) {
    stats = stats || {};
    const now = Date.now();
    const fromSamples = this.keys.some((k) => Array.isArray(get(stats, k + '_details.samples')));
    const out = {};
    if (fromSamples) {
      // A key the server has no counter for yet (nothing published, say) is zero throughout.
      let stamps = [];
      for (const k of this.keys) {
        const s = get(stats, k + '_details.samples');
        if (Array.isArray(s) && s.length > stamps.length) stamps = s.map((x) => x.timestamp);
      }
      for (const k of this.keys) {
        const raw = get(stats, k + '_details.samples');
        const s = (Array.isArray(raw) ? raw : stamps.map((t) => ({ timestamp: t, sample: 0 })))
          .slice().sort((a, b) => a.timestamp - b.timestamp);
        out[k] = this.kind === 'rate' ? rates(s.map((x) => [x.timestamp, x.sample])) : s.map((x) => [x.timestamp, x.sample]);
      }
      return out;
    }
    this.ring.push([now, Object.fromEntries(this.keys.map((k) => [k, Number(stats[k]) || 0]))]);
    while (this.ring.length && this.ring[0][0] < now - WINDOW_MS - 10000) this.ring.shift();
    for (const k of this.keys) {
      const s = this.ring.map(([t, v]) => [t, v[k]]);
      out[k] = this.kind === 'rate' ? rates(s) : s;
    }
    return out;
  }
}

function rates(s) {
  const out = [];
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i][0] - s[i - 1][0]) / 1000;
    if (dt <= 0) continue;
    // A counter that went down was reset (object re-created): no negative rates.
    out.push([s[i][0], Math.max(0, (s[i][1] - s[i - 1][1]) / dt)]);
  }
  return out;
}

const RATE_SERIES = [
  { key: 'publish', label: 'Publish', color: '#c0471b' },
  { key: 'deliver_get', label: 'Deliver / get', color: '#1f6fb2' },
  { key: 'ack', label: 'Ack', color: '#2e7d32' },
  { key: 'confirm', label: 'Confirm', color: '#8e44ad', dash: [6, 4] },
];
// An exchange's: messages published into it and routed on (RabbitMQ's names).
const EXCHANGE_SERIES = [
  { key: 'publish_in', label: 'Publish in', color: '#c0471b' },
  { key: 'publish_out', label: 'Publish out', color: '#1f6fb2', dash: [6, 4] },
];
// A channel's, as its RabbitMQ page draws them.
const CHANNEL_SERIES = [
  { key: 'publish', label: 'Publish', color: '#c0471b' },
  { key: 'confirm', label: 'Confirm', color: '#8e44ad', dash: [6, 4] },
  { key: 'deliver_get', label: 'Deliver / get', color: '#1f6fb2' },
  { key: 'ack', label: 'Ack', color: '#2e7d32' },
  { key: 'redeliver', label: 'Redeliver', color: '#e0a100' },
  { key: 'return_unroutable', label: 'Unroutable (return)', color: '#677085' },
];
// A connection's bytes.
const DATA_SERIES = [
  { key: 'recv_oct', label: 'From client', color: '#c0471b' },
  { key: 'send_oct', label: 'To client', color: '#1f6fb2' },
];
const LENGTH_SERIES = [
  { key: 'messages_ready', label: 'Ready', color: '#1f6fb2' },
  { key: 'messages_unacknowledged', label: 'Unacked', color: '#e0a100' },
  { key: 'messages', label: 'Total', color: '#677085' },
];

// ------------------------------------------------------------------------------------------
// Buttons that act only on a second click (no native dialogs: they block the page and the
// WebDriver session). Armed state survives a refresh of the row that holds the button.
// ------------------------------------------------------------------------------------------

const armed = new Set();

function confirmButton(opts) {
  const { key, label, armedLabel, action } = opts;
  const b = h('button', { type: 'button', class: 'danger', id: opts.id, dataset: Object.assign({ action: opts.actionName || '' }, opts.dataset || {}) });
  const paint = () => {
    const on = armed.has(key);
    b.textContent = on ? armedLabel || 'Click again to confirm' : label;
    b.classList.toggle('armed', on);
    b.dataset.armed = on ? '1' : '0';
  };
  b.addEventListener('click', async () => {
    if (!armed.has(key)) {
      armed.add(key);
      paint();
      return;
    }
    armed.delete(key);
    b.disabled = true;
    try { await action(); } catch (e) { toast(e.message, true); }
    b.disabled = false;
    paint();
  });
  paint();
  return b;
}

// ------------------------------------------------------------------------------------------
// Server-side paged, sorted, filtered tables.
// ------------------------------------------------------------------------------------------

const tableState = {};

function pagedTable(cfg) {
  // cfg: {id, path, columns: [{key, label, sort, num, render}], sort, rowData(item) -> dataset}
  const st = tableState[cfg.id] || (tableState[cfg.id] = {
    page: 1, page_size: cfg.pageSize || 100, name: '', use_regex: false, sort: cfg.sort || 'name', sort_reverse: false,
  });
  const filter = h('input', { type: 'text', id: cfg.id + '-filter', placeholder: 'Filter by name', value: st.name, size: 30 });
  const regex = h('input', { type: 'checkbox', id: cfg.id + '-regex', checked: st.use_regex });
  const sizeSel = h('select', { id: cfg.id + '-page-size' }, [20, 50, 100, 500].map((n) => h('option', { value: n, text: n, selected: n === st.page_size })));
  const info = h('span', { id: cfg.id + '-info', class: 'muted' });
  const prev = h('button', { type: 'button', id: cfg.id + '-prev', text: '\u2039 Prev' });
  const next = h('button', { type: 'button', id: cfg.id + '-next', text: 'Next \u203A' });
  const pageInput = h('input', { type: 'number', id: cfg.id + '-page', min: 1, value: st.page, style: 'width:70px' });
  const pageCount = h('span', { id: cfg.id + '-page-count' });
  const heads = cfg.columns.map((c) => {
    const th = h('th', { class: (c.num ? 'num ' : '') + (c.sort ? 'sortable' : ''), text: c.label, dataset: { sort: c.sort || '' } });
    if (c.sort) th.addEventListener('click', () => {
      if (st.sort === c.sort) st.sort_reverse = !st.sort_reverse; else { st.sort = c.sort; st.sort_reverse = !!c.num; }
      st.page = 1;
      paintHeads();
      refresh();
    });
    return th;
  });
  const tbody = h('tbody', { id: cfg.id + '-rows' });
  const table = h('table', { id: cfg.id + '-table', dataset: { loaded: '0' } }, h('thead', {}, h('tr', {}, heads)), tbody);
  const el = h('div', { class: 'paged', id: cfg.id },
    h('div', { class: 'toolbar' }, filter, h('label', {}, regex, ' Regex'), h('label', {}, 'Page size ', sizeSel), cfg.toolbar || null),
    table,
    h('div', { class: 'pager' }, prev, 'Page', pageInput, 'of', pageCount, next, info));

  function paintHeads() {
    heads.forEach((th, i) => {
      const on = cfg.columns[i].sort && cfg.columns[i].sort === st.sort;
      th.classList.toggle('sorted', !!on);
      th.classList.toggle('reverse', !!on && st.sort_reverse);
    });
  }
  paintHeads();

  let debounce = null;
  filter.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { st.name = filter.value; st.page = 1; refresh(); }, 250);
  });
  regex.addEventListener('change', () => { st.use_regex = regex.checked; st.page = 1; refresh(); });
  sizeSel.addEventListener('change', () => { st.page_size = Number(sizeSel.value); st.page = 1; refresh(); });
  prev.addEventListener('click', () => { if (st.page > 1) { st.page--; refresh(); } });
  next.addEventListener('click', () => { st.page++; refresh(); });
  pageInput.addEventListener('change', () => { st.page = Math.max(1, Number(pageInput.value) || 1); refresh(); });

  // Only the newest request's answer is drawn: a slow answer to an old filter must not
  // overwrite a newer one.
  let seq = 0;
  async function refresh() {
    const my = ++seq;
    const qs = new URLSearchParams({
      page: st.page, page_size: st.page_size, name: st.name, use_regex: st.use_regex,
      sort: st.sort, sort_reverse: st.sort_reverse,
    }).toString();
    let d;
    try {
      d = await api('GET', cfg.path + '?' + qs);
    } catch (e) {
      // RabbitMQ answers 400 for a page past the end (the list shrank): go back to page 1.
      if (e.status === 400 && st.page > 1) { st.page = 1; return refresh(); }
      throw e;
    }
    if (my !== seq) return;
    if (Array.isArray(d)) d = { items: d, page: 1, page_count: 1, filtered_count: d.length, total_count: d.length, item_count: d.length };
    if (d.page_count > 0 && st.page > d.page_count) { st.page = d.page_count; return refresh(); }
    const rows = d.items.map((item) => {
      const tr = h('tr', { dataset: Object.assign({ name: item.name === undefined ? '' : item.name, vhost: item.vhost || '' }, cfg.rowData ? cfg.rowData(item) : {}) });
      for (const c of cfg.columns) {
        const v = c.render ? c.render(item) : get(item, c.key);
        const td = h('td', { class: c.num ? 'num' : '', dataset: { col: c.key } });
        if (v instanceof Node) td.appendChild(v); else td.textContent = c.num && typeof v === 'number' ? fmtNum(v) : (v === undefined || v === null ? '' : String(v));
        tr.appendChild(td);
      }
      return tr;
    });
    tbody.replaceChildren(...rows);
    if (rows.length === 0) tbody.appendChild(h('tr', {}, h('td', { colspan: cfg.columns.length, class: 'muted', text: st.name ? 'No items match the filter.' : 'No items.' })));
    pageInput.value = st.page;
    pageCount.textContent = String(Math.max(1, d.page_count || 1));
    prev.disabled = st.page <= 1;
    next.disabled = st.page >= (d.page_count || 1);
    info.textContent = `${fmtNum(d.item_count)} shown, ${fmtNum(d.filtered_count)} matching, ${fmtNum(d.total_count)} in total`;
    table.dataset.loaded = '1';
    table.dataset.query = qs;
    table.dataset.filter = st.name;
    table.dataset.filteredCount = String(d.filtered_count);
    table.dataset.totalCount = String(d.total_count);
  }

  return { el, refresh };
}

function link(href, text) { return h('a', { href, text }); }

function queueHref(q) { return `#/queues/${enc(q.vhost)}/${enc(q.name)}`; }
function exchangeHref(x) { return `#/exchanges/${enc(x.vhost)}/${enc(x.name === '' ? 'amq.default' : x.name)}`; }
function connectionHref(name) { return `#/connections/${enc(name)}`; }
function channelHref(name) { return `#/channels/${enc(name)}`; }

// ------------------------------------------------------------------------------------------
// Views. Each returns {refresh, dispose?}; refresh is called on mount and every REFRESH_MS.
// ------------------------------------------------------------------------------------------

function loginView(root) {
  const user = h('input', { type: 'text', id: 'login-username', name: 'username', autocomplete: 'username', value: 'guest' });
  const pass = h('input', { type: 'password', id: 'login-password', name: 'password', autocomplete: 'current-password' });
  const err = h('div', { class: 'error', id: 'login-error' });
  const form = h('form', { id: 'login-form' },
    h('label', {}, 'Username'), user, h('label', {}, 'Password'), pass,
    h('button', { type: 'submit', id: 'login-submit', text: 'Log in' }), err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    session.set(user.value, pass.value);
    try {
      const me = await api('GET', '/whoami', undefined, { noRedirect: true });
      session.setTags(me && me.tags);
    } catch (e) {
      session.clear();
      err.textContent = e.status === 401 ? 'Login failed: wrong username or password.' : 'Login failed: ' + e.message;
      return;
    }
    const next = sessionStorage.getItem('warren.next');
    sessionStorage.removeItem('warren.next');
    location.hash = next && !next.startsWith('#/login') ? next : '#/';
  });
  root.append(h('div', { class: 'login panel', id: 'login' }, h('h1', { text: 'Warren' }), form));
  setTimeout(() => (user.value ? pass : user).focus(), 0);
  return { refresh: async () => {} };
}

function overviewView(root) {
  const cards = (ids) => h('div', { class: 'cards' }, ids.map(([id, label]) =>
    h('div', { class: 'card' }, h('div', { class: 'label', text: label }), h('div', { class: 'value', id, text: '\u2013' }))));
  const rateChart = new Chart('chart-rates', 'Message rates (last 10 minutes)', RATE_SERIES, 'rate');
  const lenChart = new Chart('chart-queued', 'Queued messages (last 10 minutes)', LENGTH_SERIES, 'count');
  const rateHist = new History(RATE_SERIES.map((s) => s.key), 'rate');
  const lenHist = new History(LENGTH_SERIES.map((s) => s.key), 'count');
  const listeners = h('tbody', { id: 'listeners-rows' });
  const node = h('dl', { class: 'kv', id: 'node' });
  root.append(
    h('h1', { text: 'Overview', id: 'page-overview' }),
    h('h2', { text: 'Totals' }),
    cards([['total-connections', 'Connections'], ['total-channels', 'Channels'], ['total-exchanges', 'Exchanges'],
      ['total-queues', 'Queues'], ['total-consumers', 'Consumers']]),
    h('h2', { text: 'Queued messages' }),
    cards([['totals-messages', 'Total'], ['totals-ready', 'Ready'], ['totals-unacked', 'Unacked']]),
    h('h2', { text: 'Charts' }),
    h('div', { class: 'charts' }, rateChart.el, lenChart.el),
    h('h2', { text: 'Node' }),
    h('div', { class: 'panel' }, node, h('div', { id: 'alarms' })),
    h('h2', { text: 'Listeners' }),
    h('table', { id: 'listeners' }, h('thead', {}, h('tr', {}, ['Protocol', 'Interface', 'Port'].map((t) => h('th', { text: t })))), listeners),
  );
  async function refresh() {
    const [ov, nodes] = await Promise.all([api('GET', '/overview?' + SAMPLES_QS), api('GET', '/nodes')]);
    const ot = ov.object_totals || {};
    setText('total-connections', fmtNum(ot.connections));
    setText('total-channels', fmtNum(ot.channels));
    setText('total-exchanges', fmtNum(ot.exchanges));
    setText('total-queues', fmtNum(ot.queues));
    setText('total-consumers', fmtNum(ot.consumers));
    const qt = ov.queue_totals || {};
    setText('totals-messages', fmtNum(qt.messages || 0));
    setText('totals-ready', fmtNum(qt.messages_ready || 0));
    setText('totals-unacked', fmtNum(qt.messages_unacknowledged || 0));
    rateChart.set(rateHist.points(ov.message_stats));
    lenChart.set(lenHist.points(qt));
    listeners.replaceChildren(...(ov.listeners || []).map((l) =>
      h('tr', { dataset: { protocol: l.protocol, port: l.port } }, h('td', { text: l.protocol }), h('td', { text: l.ip_address }), h('td', { text: l.port }))));
    const n = (nodes || [])[0] || {};
    const bar = (used, limit, alarm) => h('span', { class: 'bar' + (alarm ? ' alarm' : '') },
      h('span', { style: `width:${limit > 0 ? Math.min(100, (100 * used) / limit) : 0}%` }));
    node.replaceChildren(
      h('dt', { text: 'Node' }), h('dd', { id: 'node-name', text: n.name || ov.node || '' }),
      h('dt', { text: 'Version' }), h('dd', { text: `${ov.product_name || ''} ${ov.product_version || ov.rabbitmq_version || ''}` }),
      h('dt', { text: 'Memory' }), h('dd', { id: 'node-memory', dataset: { used: n.mem_used, limit: n.mem_limit } },
        `${fmtBytes(n.mem_used)} of ${fmtBytes(n.mem_limit)} high watermark`, bar(n.mem_used, n.mem_limit, n.mem_alarm)),
      h('dt', { text: 'Disk free' }), h('dd', { id: 'node-disk', dataset: { free: n.disk_free, limit: n.disk_free_limit } },
        `${fmtBytes(n.disk_free)} (alarm below ${fmtBytes(n.disk_free_limit)})`),
      h('dt', { text: 'File descriptors' }), h('dd', { text: n.fd_used !== undefined ? `${fmtNum(n.fd_used)} of ${fmtNum(n.fd_total)}` : '' }),
      h('dt', { text: 'Uptime' }), h('dd', { text: n.uptime !== undefined ? fmtUptime(n.uptime) : '' }),
    );
    const alarms = [];
    if (n.mem_alarm) alarms.push('Memory alarm: publishers are blocked.');
    if (n.disk_free_alarm) alarms.push('Disk alarm: publishers are blocked.');
    const box = document.getElementById('alarms');
    box.dataset.alarms = String(alarms.length);
    box.replaceChildren(alarms.length ? h('div', { class: 'bad', text: alarms.join(' ') }) : h('div', { class: 'ok', text: 'No alarms.' }));
  }
  return { refresh, dispose() { rateChart.dispose(); lenChart.dispose(); } };
}

function fmtUptime(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60);
  return (d ? d + 'd ' : '') + hh + 'h ' + mm + 'm';
}

function queuesView(root) {
  const t = pagedTable({
    id: 'queues', path: '/queues', sort: 'name',
    columns: [
      { key: 'vhost', label: 'Virtual host', sort: 'vhost' },
      { key: 'name', label: 'Name', sort: 'name', render: (q) => link(queueHref(q), q.name) },
      { key: 'type', label: 'Type', sort: 'type' },
      { key: 'features', label: 'Features', render: (q) => featureBadges(q, [[q.durable, 'D', 'durable'], [q.auto_delete, 'AD', 'auto-delete'], [q.exclusive, 'Excl', 'exclusive']]) },
      { key: 'state', label: 'State', sort: 'state' },
      { key: 'messages_ready', label: 'Ready', sort: 'messages_ready', num: true },
      { key: 'messages_unacknowledged', label: 'Unacked', sort: 'messages_unacknowledged', num: true },
      { key: 'messages', label: 'Total', sort: 'messages', num: true },
      { key: 'consumers', label: 'Consumers', sort: 'consumers', num: true },
      { key: 'incoming', label: 'Incoming', num: true, render: (q) => fmtRate(get(q, 'message_stats.publish_details.rate')) },
      { key: 'deliver', label: 'Deliver / get', num: true, render: (q) => fmtRate(get(q, 'message_stats.deliver_get_details.rate')) },
      { key: 'ack', label: 'Ack', num: true, render: (q) => fmtRate(get(q, 'message_stats.ack_details.rate')) },
    ],
  });
  // Declaring a queue from here: PUT /api/queues/VHOST/NAME, as RabbitMQ's UI does, with
  // its type and arguments (a quorum queue is always durable).
  const name = h('input', { type: 'text', id: 'add-queue-name', placeholder: 'name' });
  const vhost = h('input', { type: 'text', id: 'add-queue-vhost', value: '/' });
  const kind = h('select', { id: 'add-queue-type' }, h('option', { value: 'classic', text: 'Classic' }), h('option', { value: 'quorum', text: 'Quorum' }));
  const durable = h('input', { type: 'checkbox', id: 'add-queue-durable', checked: true });
  kind.addEventListener('change', () => {
    durable.disabled = kind.value === 'quorum';
    if (durable.disabled) durable.checked = true;
  });
  const args = argumentRows('add-queue-args', [
    ['x-message-ttl', 'Message TTL', 'number'], ['x-expires', 'Auto expire', 'number'],
    ['x-overflow', 'Overflow behaviour', 'string'], ['x-single-active-consumer', 'Single active consumer', 'boolean'],
    ['x-dead-letter-exchange', 'Dead letter exchange', 'string'], ['x-dead-letter-routing-key', 'Dead letter routing key', 'string'],
    ['x-max-length', 'Max length', 'number'], ['x-max-length-bytes', 'Max length bytes', 'number'],
    ['x-max-priority', 'Maximum priority', 'number'], ['x-delivery-limit', 'Delivery limit (quorum)', 'number'],
    ['x-queue-mode', 'Lazy mode', 'string', 'lazy'],
  ]);
  const add = h('form', { class: 'grid', id: 'add-queue' },
    h('label', { text: 'Virtual host' }), vhost, h('label', { text: 'Type' }), kind, h('label', { text: 'Name' }), name,
    h('label', { text: 'Durable' }), durable, h('label', { text: 'Arguments' }), args.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'add-queue-submit', text: 'Add queue' })));
  add.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let arguments_;
    try { arguments_ = args.value(); } catch (e) { toast(e.message, true); return; }
    if (kind.value === 'quorum') arguments_['x-queue-type'] = 'quorum';
    try {
      await api('PUT', `/queues/${enc(vhost.value)}/${enc(name.value)}`, { durable: durable.checked, auto_delete: false, arguments: arguments_ });
      toast(`Queue ${name.value} declared.`);
      name.value = '';
      args.clear();
      t.refresh();
    } catch (e) { toast(e.message, true); }
  });
  root.append(h('h1', { text: 'Queues', id: 'page-queues' }), t.el, h('h2', { text: 'Add a queue' }), h('div', { class: 'panel' }, add));
  return { refresh: t.refresh };
}

// Rows of key / value / type for an arguments table, as RabbitMQ's forms have, with
// links that add a known argument. `value()` builds the table (numbers must be integers;
// throws with a readable message otherwise), `clear()` empties it.
function argumentRows(id, known) {
  const body = h('div', { id, class: 'arg-rows' });
  let n = 0;
  function row(key, type, value) {
    const i = n++;
    const k = h('input', { type: 'text', class: 'arg-key', id: `${id}-key-${i}`, placeholder: 'key', value: key || '' });
    const v = h('input', { type: 'text', class: 'arg-value', id: `${id}-value-${i}`, placeholder: 'value', value: value || '' });
    const ty = h('select', { class: 'arg-type', id: `${id}-type-${i}` },
      ['string', 'number', 'boolean'].map((t) => h('option', { value: t, text: t[0].toUpperCase() + t.slice(1), selected: t === (type || 'string') })));
    const r = h('div', { class: 'arg-row' }, k, ' = ', v, ' ', ty);
    body.appendChild(r);
    return r;
  }
  const links = h('div', { class: 'muted', id: id + '-known' }, 'Add: ', known.map(([key, label, type, value], i) => [
    i ? ' | ' : '',
    h('a', { href: '#', dataset: { arg: key }, text: label, on: { click: (ev) => { ev.preventDefault(); fill(key, type, value); } } }),
  ]));
  function fill(key, type, value) {
    // The first empty row takes it; otherwise a new one.
    const free = [...body.querySelectorAll('.arg-row')].find((r) => !r.querySelector('.arg-key').value);
    const r = free || row();
    r.querySelector('.arg-key').value = key;
    r.querySelector('.arg-type').value = type;
    if (value !== undefined) r.querySelector('.arg-value').value = value;
    r.querySelector('.arg-value').focus();
  }
  row();
  const more = h('button', { type: 'button', id: id + '-more', text: '+ argument', on: { click: () => row() } });
  return {
    el: h('div', {}, body, more, links),
    value() {
      const out = {};
      for (const r of body.querySelectorAll('.arg-row')) {
        const key = r.querySelector('.arg-key').value.trim();
        if (!key) continue;
        const raw = r.querySelector('.arg-value').value.trim();
        const type = r.querySelector('.arg-type').value;
        if (type === 'number') {
          if (!/^-?[0-9]+$/.test(raw)) throw new Error(`Argument ${key}: "${raw}" is not an integer.`);
          out[key] = Number(raw);
        } else if (type === 'boolean') {
          if (raw !== 'true' && raw !== 'false') throw new Error(`Argument ${key}: a boolean is true or false.`);
          out[key] = raw === 'true';
        } else out[key] = raw;
      }
      return out;
    },
    clear() { body.replaceChildren(); row(); },
  };
}

function kv(id, pairs) {
  // A value may be a node (a link) or text.
  return h('dl', { class: 'kv', id }, pairs.map(([k, v, vid]) => [h('dt', { text: k }),
    v instanceof Node ? h('dd', { id: vid }, v) : h('dd', { id: vid, text: v === undefined || v === null ? '' : v })]));
}

function publishForm(prefix, vhost, exchange, fixedKey) {
  const rk = h('input', { type: 'text', id: prefix + '-rk', value: fixedKey || '', placeholder: 'routing key' });
  const mode = h('select', { id: prefix + '-delivery-mode' }, h('option', { value: '1', text: '1 - non-persistent' }), h('option', { value: '2', text: '2 - persistent' }));
  const headers = h('input', { type: 'text', id: prefix + '-headers', placeholder: '{"x-key": "value"}' });
  const props = h('input', { type: 'text', id: prefix + '-props', placeholder: '{"content_type": "text/plain"}' });
  const payload = h('textarea', { id: prefix + '-payload' });
  const encSel = h('select', { id: prefix + '-encoding' }, h('option', { value: 'string', text: 'string' }), h('option', { value: 'base64', text: 'base64' }));
  const result = h('div', { id: prefix + '-result', dataset: { routed: '' } });
  const form = h('form', { class: 'grid', id: prefix + '-form' },
    fixedKey === undefined ? [h('label', { text: 'Routing key' }), rk] : null,
    h('label', { text: 'Delivery mode' }), mode,
    h('label', { text: 'Headers (JSON)' }), headers,
    h('label', { text: 'Properties (JSON)' }), props,
    h('label', { text: 'Payload' }), payload,
    h('label', { text: 'Payload encoding' }), encSel,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: prefix + '-submit', text: 'Publish message' }), ' ', result));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    result.dataset.routed = '';
    result.textContent = '';
    let properties;
    try {
      properties = Object.assign({}, props.value.trim() ? JSON.parse(props.value) : {});
      if (headers.value.trim()) properties.headers = JSON.parse(headers.value);
    } catch (e) {
      result.textContent = 'Headers and properties must be JSON objects.';
      result.className = 'bad';
      return;
    }
    properties.delivery_mode = Number(mode.value);
    try {
      const r = await api('POST', `/exchanges/${enc(vhost)}/${enc(exchange === '' ? 'amq.default' : exchange)}/publish`, {
        properties, routing_key: fixedKey !== undefined ? fixedKey : rk.value, payload: payload.value, payload_encoding: encSel.value,
      });
      result.dataset.routed = r && r.routed ? 'true' : 'false';
      result.className = r && r.routed ? 'ok' : 'bad';
      result.textContent = r && r.routed ? 'Message published.' : 'Message published, but not routed.';
    } catch (e) {
      result.dataset.routed = 'error';
      result.className = 'bad';
      result.textContent = e.message;
    }
  });
  return form;
}

function queueView(root, vhost, name) {
  const base = `/queues/${enc(vhost)}/${enc(name)}`;
  const rateChart = new Chart('q-chart-rates', 'Message rates', RATE_SERIES.slice(0, 3), 'rate');
  const lenChart = new Chart('q-chart-queued', 'Queued messages', LENGTH_SERIES, 'count');
  const rateHist = new History(['publish', 'deliver_get', 'ack'], 'rate');
  const lenHist = new History(LENGTH_SERIES.map((s) => s.key), 'count');
  const details = h('div', { id: 'q-details' });
  const consumers = h('tbody', { id: 'q-consumers-rows' });
  const bindings = h('tbody', { id: 'q-bindings-rows' });
  const cards = h('div', { class: 'cards' }, [['q-messages', 'Total'], ['q-ready', 'Ready'], ['q-unacked', 'Unacked'], ['q-consumers', 'Consumers'], ['q-state', 'State']]
    .map(([id, label]) => h('div', { class: 'card' }, h('div', { class: 'label', text: label }), h('div', { class: 'value', id, text: '\u2013' }))));

  // Get messages: POST .../get.
  const count = h('input', { type: 'number', id: 'q-get-count', value: 1, min: 1, style: 'width:80px' });
  const ackmode = h('select', { id: 'q-get-ackmode' },
    [['ack_requeue_true', 'Nack message requeue true'], ['reject_requeue_true', 'Reject requeue true'],
      ['ack_requeue_false', 'Automatic ack'], ['reject_requeue_false', 'Reject requeue false']].map(([v, t]) => h('option', { value: v, text: t })));
  const encoding = h('select', { id: 'q-get-encoding' }, h('option', { value: 'auto', text: 'Auto string / base64' }), h('option', { value: 'base64', text: 'base64' }));
  const truncate = h('input', { type: 'number', id: 'q-get-truncate', value: 50000, style: 'width:100px' });
  const got = h('div', { id: 'q-get-result', dataset: { count: '' } });
  const getForm = h('form', { class: 'grid', id: 'q-get-form' },
    h('label', { text: 'Ack mode' }), ackmode, h('label', { text: 'Encoding' }), encoding,
    h('label', { text: 'Messages' }), count, h('label', { text: 'Truncate at' }), truncate,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'q-get-submit', text: 'Get message(s)' })));
  getForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    got.dataset.count = '';
    try {
      const msgs = await api('POST', base + '/get', {
        count: Number(count.value) || 1, ackmode: ackmode.value, encoding: encoding.value, truncate: Number(truncate.value) || 50000,
      });
      got.replaceChildren(...(msgs.length ? msgs.map((m, i) => h('div', { class: 'panel message', dataset: { payload: m.payload, index: i } },
        kv('', [['Exchange', m.exchange === '' ? '(AMQP default)' : m.exchange], ['Routing key', m.routing_key],
          ['Redelivered', fmtBool(m.redelivered)], ['Remaining in queue', fmtNum(m.message_count)],
          ['Properties', JSON.stringify(m.properties || {})], ['Payload', `${fmtNum(m.payload_bytes)} bytes, encoding: ${m.payload_encoding}`]]),
        h('pre', { class: 'payload', text: m.payload }))) : [h('div', { class: 'muted', text: 'Queue is empty.' })]));
      got.dataset.count = String(msgs.length);
      refresh().catch(() => {});
    } catch (e) {
      got.replaceChildren(h('div', { class: 'bad', text: e.message }));
      got.dataset.count = 'error';
    }
  });

  // Bind this queue to an exchange.
  const bx = h('input', { type: 'text', id: 'q-bind-exchange', placeholder: 'exchange' });
  const brk = h('input', { type: 'text', id: 'q-bind-rk', placeholder: 'routing key' });
  const bindForm = h('form', { class: 'toolbar', id: 'q-bind-form' }, 'From exchange', bx, 'Routing key', brk,
    h('button', { type: 'submit', id: 'q-bind-submit', text: 'Bind' }));
  bindForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', `/bindings/${enc(vhost)}/e/${enc(bx.value)}/q/${enc(name)}`, { routing_key: brk.value, arguments: {} });
      toast('Binding added.');
      refresh().catch(() => {});
    } catch (e) { toast(e.message, true); }
  });

  const purge = confirmButton({ id: 'q-purge', key: 'purge:' + vhost + ':' + name, label: 'Purge messages', armedLabel: 'Click again to purge',
    action: async () => { await api('DELETE', base + '/contents'); toast(`Queue ${name} purged.`); await refresh(); } });
  const del = confirmButton({ id: 'q-delete', key: 'delete-q:' + vhost + ':' + name, label: 'Delete queue', armedLabel: 'Click again to delete',
    action: async () => { await api('DELETE', base); toast(`Queue ${name} deleted.`); location.hash = '#/queues'; } });

  root.append(
    h('h1', { id: 'page-queue', dataset: { name, vhost } }, 'Queue ', h('span', { id: 'q-name', text: name }), h('span', { class: 'muted', text: ` in virtual host ${vhost}` })),
    cards,
    h('div', { class: 'charts' }, lenChart.el, rateChart.el),
    h('h2', { text: 'Details' }), h('div', { class: 'panel' }, details),
    h('h2', { text: 'Consumers' }),
    h('table', { id: 'q-consumers' }, h('thead', {}, h('tr', {}, ['Channel', 'Consumer tag', 'Ack required', 'Exclusive', 'Prefetch', 'Active'].map((t) => h('th', { text: t })))), consumers),
    h('h2', { text: 'Bindings' }),
    h('table', { id: 'q-bindings' }, h('thead', {}, h('tr', {}, ['From', 'Routing key', 'Arguments', ''].map((t) => h('th', { text: t })))), bindings),
    h('div', { class: 'panel' }, bindForm),
    h('h2', { text: 'Publish message' }), h('div', { class: 'panel' }, publishForm('q-publish', vhost, '', name)),
    h('h2', { text: 'Get messages' }), h('div', { class: 'panel' }, getForm, got),
    h('h2', { text: 'Purge / delete' }), h('div', { class: 'panel toolbar' }, purge, del),
  );

  async function refresh() {
    let q;
    try {
      q = await api('GET', base + '?' + SAMPLES_QS);
    } catch (e) {
      if (e.status === 404) {
        details.replaceChildren(h('div', { class: 'bad', id: 'q-missing', text: 'This queue does not exist (any more).' }));
        return;
      }
      throw e;
    }
    setText('q-messages', fmtNum(q.messages || 0));
    setText('q-ready', fmtNum(q.messages_ready || 0));
    setText('q-unacked', fmtNum(q.messages_unacknowledged || 0));
    setText('q-consumers', fmtNum(q.consumers || 0));
    setText('q-state', q.state || '');
    document.getElementById('q-messages').dataset.value = String(q.messages || 0);
    rateChart.set(rateHist.points(q.message_stats));
    lenChart.set(lenHist.points(q));
    details.replaceChildren(kv('q-kv', [
      ['Type', q.type], ['Durable', fmtBool(q.durable)], ['Auto delete', fmtBool(q.auto_delete)], ['Exclusive', fmtBool(q.exclusive)],
      ['Arguments', fmtArgs(q.arguments)], ['Policy', q.policy || ''], ['Node', q.node || ''],
      ['Memory', fmtBytes(q.memory)], ['Message bytes', fmtBytes(q.message_bytes)],
      ['Consumer utilisation', typeof q.consumer_utilisation === 'number' ? Math.round(q.consumer_utilisation * 100) + '%' : ''],
      ['Idle since', q.idle_since || ''],
    ]));
    let cons = q.consumer_details;
    if (!Array.isArray(cons)) {
      const all = await api('GET', `/consumers/${enc(vhost)}`);
      cons = (all || []).filter((c) => c.queue && c.queue.name === name);
    }
    consumers.replaceChildren(...(cons.length ? cons.map((c) => h('tr', { dataset: { tag: c.consumer_tag } },
      h('td', { text: get(c, 'channel_details.name') || '' }), h('td', { text: c.consumer_tag }), h('td', { text: fmtBool(c.ack_required) }),
      h('td', { text: fmtBool(c.exclusive) }), h('td', { text: fmtNum(c.prefetch_count) }), h('td', { text: fmtBool(c.active) })))
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No consumers.' }))]));
    const bs = await api('GET', base + '/bindings');
    bindings.replaceChildren(...(bs || []).map((b) => h('tr', { dataset: { source: b.source, routingKey: b.routing_key } },
      h('td', {}, b.source === '' ? '(AMQP default)' : link(exchangeHref({ vhost, name: b.source }), b.source)),
      h('td', { text: b.routing_key }), h('td', { text: fmtArgs(b.arguments) }),
      h('td', {}, b.source === '' ? '' : confirmButton({ key: `unbind:${vhost}:${b.source}:${name}:${b.properties_key}`, label: 'Unbind', actionName: 'unbind',
        action: async () => { await api('DELETE', `/bindings/${enc(vhost)}/e/${enc(b.source)}/q/${enc(name)}/${enc(b.properties_key)}`); await refresh(); } })))));
  }
  return { refresh, dispose() { rateChart.dispose(); lenChart.dispose(); } };
}

function exchangesView(root) {
  const t = pagedTable({
    id: 'exchanges', path: '/exchanges', sort: 'name',
    columns: [
      { key: 'vhost', label: 'Virtual host', sort: 'vhost' },
      { key: 'name', label: 'Name', sort: 'name', render: (x) => link(exchangeHref(x), x.name === '' ? '(AMQP default)' : x.name) },
      { key: 'type', label: 'Type', sort: 'type' },
      { key: 'features', label: 'Features', render: (x) => featureBadges(x, [[x.durable, 'D', 'durable'], [x.auto_delete, 'AD', 'auto-delete'], [x.internal, 'I', 'internal']]) },
      { key: 'in', label: 'Message rate in', num: true, render: (x) => fmtRate(get(x, 'message_stats.publish_in_details.rate')) },
      { key: 'out', label: 'Message rate out', num: true, render: (x) => fmtRate(get(x, 'message_stats.publish_out_details.rate')) },
    ],
  });
  root.append(h('h1', { text: 'Exchanges', id: 'page-exchanges' }), t.el);
  return { refresh: t.refresh };
}

function exchangeView(root, vhost, name) {
  // The default exchange is addressed as amq.default in the API's paths.
  const base = `/exchanges/${enc(vhost)}/${enc(name)}`;
  const details = h('div', { id: 'x-details' });
  const rateChart = new Chart('x-chart-rates', 'Message rates', EXCHANGE_SERIES, 'rate');
  const rateHist = new History(EXCHANGE_SERIES.map((s) => s.key), 'rate');
  const src = h('tbody', { id: 'x-bindings-source-rows' });
  const dst = h('tbody', { id: 'x-bindings-destination-rows' });
  const bq = h('input', { type: 'text', id: 'x-bind-dest', placeholder: 'destination' });
  const bkind = h('select', { id: 'x-bind-kind' }, h('option', { value: 'q', text: 'To queue' }), h('option', { value: 'e', text: 'To exchange' }));
  const brk = h('input', { type: 'text', id: 'x-bind-rk', placeholder: 'routing key' });
  const bindForm = h('form', { class: 'toolbar', id: 'x-bind-form' }, bkind, bq, 'Routing key', brk, h('button', { type: 'submit', id: 'x-bind-submit', text: 'Bind' }));
  bindForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', `/bindings/${enc(vhost)}/e/${enc(name)}/${bkind.value}/${enc(bq.value)}`, { routing_key: brk.value, arguments: {} });
      toast('Binding added.');
      refresh().catch(() => {});
    } catch (e) { toast(e.message, true); }
  });
  const builtIn = name === 'amq.default' || name.startsWith('amq.');
  const del = builtIn ? null : confirmButton({ id: 'x-delete', key: `delete-x:${vhost}:${name}`, label: 'Delete exchange', armedLabel: 'Click again to delete',
    action: async () => { await api('DELETE', base); toast(`Exchange ${name} deleted.`); location.hash = '#/exchanges'; } });
  const bindRow = (b, other, kind) => h('tr', { dataset: { source: b.source, destination: b.destination, routingKey: b.routing_key } },
    h('td', {}, kind === 'queue' ? link(queueHref({ vhost, name: other }), other) : link(exchangeHref({ vhost, name: other }), other === '' ? '(AMQP default)' : other)),
    h('td', { text: kind }), h('td', { text: b.routing_key }), h('td', { text: fmtArgs(b.arguments) }));
  root.append(
    h('h1', { id: 'page-exchange', dataset: { name, vhost } }, 'Exchange ', h('span', { id: 'x-name', text: name === 'amq.default' ? '(AMQP default)' : name }), h('span', { class: 'muted', text: ` in virtual host ${vhost}` })),
    h('div', { class: 'panel' }, details),
    h('div', { class: 'charts' }, rateChart.el),
    h('h2', { text: 'Bindings from this exchange' }),
    h('table', { id: 'x-bindings-source' }, h('thead', {}, h('tr', {}, ['To', 'Kind', 'Routing key', 'Arguments'].map((t) => h('th', { text: t })))), src),
    name === 'amq.default' ? '' : h('div', { class: 'panel' }, bindForm),
    h('h2', { text: 'Bindings to this exchange' }),
    h('table', { id: 'x-bindings-destination' }, h('thead', {}, h('tr', {}, ['From', 'Kind', 'Routing key', 'Arguments'].map((t) => h('th', { text: t })))), dst),
    h('h2', { text: 'Publish message' }), h('div', { class: 'panel' }, publishForm('x-publish', vhost, name === 'amq.default' ? '' : name)),
    del ? h('div', { class: 'panel toolbar' }, del) : '', // (Element.append would show null as text)
  );
  async function refresh() {
    const x = await api('GET', base + '?' + SAMPLES_QS);
    details.replaceChildren(kv('x-kv', [['Type', x.type, 'x-type'], ['Durable', fmtBool(x.durable)], ['Auto delete', fmtBool(x.auto_delete)],
      ['Internal', fmtBool(x.internal)], ['Arguments', fmtArgs(x.arguments)],
      ['Rate in', fmtRate(get(x, 'message_stats.publish_in_details.rate'))], ['Rate out', fmtRate(get(x, 'message_stats.publish_out_details.rate'))]]));
    rateChart.set(rateHist.points(x.message_stats));
    if (name === 'amq.default') {
      src.replaceChildren(h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'Every queue is bound here with its own name as routing key.' })));
    } else {
      const s = await api('GET', base + '/bindings/source');
      src.replaceChildren(...(s || []).map((b) => bindRow(b, b.destination, b.destination_type)));
    }
    const d = await api('GET', base + '/bindings/destination');
    dst.replaceChildren(...(d || []).map((b) => bindRow(b, b.source, 'exchange')));
  }
  return { refresh, dispose() { rateChart.dispose(); } };
}

function connectionsView(root) {
  const reason = h('input', { type: 'text', id: 'conn-close-reason', value: 'Closed via management plugin', size: 30 });
  const t = pagedTable({
    id: 'connections', path: '/connections', sort: 'name',
    toolbar: h('label', {}, 'Close reason ', reason),
    rowData: (c) => ({ userProvidedName: c.user_provided_name || get(c, 'client_properties.connection_name') || '' }),
    columns: [
      { key: 'vhost', label: 'Virtual host', sort: 'vhost' },
      { key: 'name', label: 'Name', sort: 'name', render: (c) => link(connectionHref(c.name), c.name) },
      { key: 'user_provided_name', label: 'Client name', render: (c) => c.user_provided_name || get(c, 'client_properties.connection_name') || '' },
      { key: 'user', label: 'User', sort: 'user' },
      { key: 'state', label: 'State', sort: 'state' },
      { key: 'protocol', label: 'Protocol' },
      { key: 'channels', label: 'Channels', sort: 'channels', num: true },
      { key: 'recv', label: 'From client', num: true, render: (c) => typeof get(c, 'recv_oct_details.rate') === 'number' ? fmtBytes(c.recv_oct_details.rate) + '/s' : '' },
      { key: 'send', label: 'To client', num: true, render: (c) => typeof get(c, 'send_oct_details.rate') === 'number' ? fmtBytes(c.send_oct_details.rate) + '/s' : '' },
      { key: 'connected_at', label: 'Connected', sort: 'connected_at', render: (c) => (c.connected_at ? new Date(c.connected_at).toLocaleTimeString() : '') },
      { key: 'close', label: '', render: (c) => confirmButton({ key: 'close:' + c.name, label: 'Close', armedLabel: 'Really close?', actionName: 'close',
        action: async () => {
          await api('DELETE', `/connections/${enc(c.name)}`, undefined, { headers: { 'X-Reason': reason.value } });
          toast(`Connection ${c.name} closed.`);
          await t.refresh();
        } }) },
    ],
  });
  root.append(h('h1', { text: 'Connections', id: 'page-connections' }), t.el);
  return { refresh: t.refresh };
}

function channelsView(root) {
  const t = pagedTable({
    id: 'channels', path: '/channels', sort: 'name',
    columns: [
      { key: 'name', label: 'Channel', sort: 'name', render: (c) => link(channelHref(c.name), c.name) },
      { key: 'connection', label: 'Connection', render: (c) => (get(c, 'connection_details.name') ? link(connectionHref(c.connection_details.name), c.connection_details.name) : '') },
      { key: 'vhost', label: 'Virtual host', sort: 'vhost' },
      { key: 'user', label: 'User', sort: 'user' },
      { key: 'mode', label: 'Mode', render: (c) => [c.confirm ? 'C' : '', c.transactional ? 'T' : ''].filter(Boolean).join(' ') },
      { key: 'state', label: 'State', sort: 'state' },
      { key: 'consumer_count', label: 'Consumers', sort: 'consumer_count', num: true },
      { key: 'prefetch_count', label: 'Prefetch', num: true },
      { key: 'messages_unacknowledged', label: 'Unacked', sort: 'messages_unacknowledged', num: true },
      { key: 'publish', label: 'Publish', num: true, render: (c) => fmtRate(get(c, 'message_stats.publish_details.rate')) },
      { key: 'deliver', label: 'Deliver / get', num: true, render: (c) => fmtRate(get(c, 'message_stats.deliver_get_details.rate')) },
      { key: 'ack', label: 'Ack', num: true, render: (c) => fmtRate(get(c, 'message_stats.ack_details.rate')) },
    ],
  });
  root.append(h('h1', { text: 'Channels', id: 'page-channels' }), t.el);
  return { refresh: t.refresh };
}

// A connection's page: its details, its data rates over the last 10 minutes, its channels,
// and a close button.
function connectionView(root, name) {
  const base = `/connections/${enc(name)}`;
  const details = h('div', { id: 'c-details' });
  const chart = new Chart('c-chart-data', 'Data rates', DATA_SERIES, 'bytes');
  const hist = new History(DATA_SERIES.map((s) => s.key), 'rate');
  const chans = h('tbody', { id: 'c-channels-rows' });
  const reason = h('input', { type: 'text', id: 'c-close-reason', value: 'Closed via management plugin', size: 30 });
  const close = confirmButton({ id: 'c-close', key: 'close-c:' + name, label: 'Close this connection', armedLabel: 'Really close?',
    action: async () => {
      await api('DELETE', base, undefined, { headers: { 'X-Reason': reason.value } });
      toast(`Connection ${name} closed.`);
      location.hash = '#/connections';
    } });
  root.append(
    h('h1', { id: 'page-connection', dataset: { name } }, 'Connection ', h('span', { id: 'c-name', text: name })),
    h('div', { class: 'panel' }, details),
    h('div', { class: 'charts' }, chart.el),
    h('h2', { text: 'Channels' }),
    h('table', { id: 'c-channels' }, h('thead', {}, h('tr', {}, ['Channel', 'Mode', 'Consumers', 'Unacked', 'Publish', 'Deliver / get', 'Ack']
      .map((t, i) => h('th', { text: t, class: i >= 2 ? 'num' : '' })))), chans),
    h('h2', { text: 'Close' }), h('div', { class: 'panel toolbar' }, h('label', {}, 'Reason ', reason), close),
  );
  async function refresh() {
    let c;
    try {
      c = await api('GET', base + '?' + DATA_QS);
    } catch (e) {
      if (e.status === 404) {
        details.replaceChildren(h('div', { class: 'bad', id: 'c-missing', text: 'This connection is closed.' }));
        return;
      }
      throw e;
    }
    const cp = c.client_properties || {};
    details.replaceChildren(kv('c-kv', [
      ['Client name', c.user_provided_name || cp.connection_name || ''], ['User', c.user], ['Virtual host', c.vhost],
      ['State', c.state, 'c-state'], ['Protocol', c.protocol], ['Client', [cp.product, cp.version, cp.platform].filter(Boolean).join(' ')],
      ['Authentication', c.auth_mechanism], ['Heartbeat', c.timeout !== undefined ? `${c.timeout} s` : ''],
      ['Frame max', fmtNum(c.frame_max)], ['Channel max', fmtNum(c.channel_max)],
      ['Connected at', c.connected_at ? new Date(c.connected_at).toLocaleString() : ''],
      ['Received', fmtBytes(c.recv_oct)], ['Sent', fmtBytes(c.send_oct)],
    ]));
    chart.set(hist.points(c));
    const list = await api('GET', base + '/channels');
    chans.replaceChildren(...((list || []).length ? list.map((ch) => h('tr', { dataset: { name: ch.name, number: ch.number } },
      h('td', {}, link(channelHref(ch.name), ch.name)),
      h('td', { text: [ch.confirm ? 'C' : '', ch.transactional ? 'T' : ''].filter(Boolean).join(' ') }),
      h('td', { class: 'num', text: fmtNum(ch.consumer_count) }), h('td', { class: 'num', text: fmtNum(ch.messages_unacknowledged) }),
      h('td', { class: 'num', text: fmtRate(get(ch, 'message_stats.publish_details.rate')) }),
      h('td', { class: 'num', text: fmtRate(get(ch, 'message_stats.deliver_get_details.rate')) }),
      h('td', { class: 'num', text: fmtRate(get(ch, 'message_stats.ack_details.rate')) })))
      : [h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'No channels.' }))]));
  }
  return { refresh, dispose() { chart.dispose(); } };
}

// A channel's page: its details, its message rates over the last 10 minutes, its consumers.
function channelView(root, name) {
  const base = `/channels/${enc(name)}`;
  const details = h('div', { id: 'ch-details' });
  const chart = new Chart('ch-chart-rates', 'Message rates', CHANNEL_SERIES, 'rate');
  const hist = new History(CHANNEL_SERIES.map((s) => s.key), 'rate');
  const consumers = h('tbody', { id: 'ch-consumers-rows' });
  root.append(
    h('h1', { id: 'page-channel', dataset: { name } }, 'Channel ', h('span', { id: 'ch-name', text: name })),
    h('div', { class: 'panel' }, details),
    h('div', { class: 'charts' }, chart.el),
    h('h2', { text: 'Consumers' }),
    h('table', { id: 'ch-consumers' }, h('thead', {}, h('tr', {}, ['Queue', 'Consumer tag', 'Ack required', 'Exclusive', 'Prefetch', 'Active']
      .map((t) => h('th', { text: t })))), consumers),
  );
  async function refresh() {
    let ch;
    try {
      ch = await api('GET', base + '?' + SAMPLES_QS);
    } catch (e) {
      if (e.status === 404) {
        details.replaceChildren(h('div', { class: 'bad', id: 'ch-missing', text: 'This channel is closed.' }));
        return;
      }
      throw e;
    }
    const conn = get(ch, 'connection_details.name');
    details.replaceChildren(kv('ch-kv', [
      ['Connection', conn ? link(connectionHref(conn), conn) : ''], ['Number', ch.number], ['User', ch.user], ['Virtual host', ch.vhost],
      ['State', ch.state, 'ch-state'], ['Mode', [ch.confirm ? 'confirm' : '', ch.transactional ? 'transactional' : ''].filter(Boolean).join(', ') || 'plain'],
      ['Prefetch', fmtNum(ch.prefetch_count)], ['Global prefetch', fmtNum(ch.global_prefetch_count)],
      ['Unacked', fmtNum(ch.messages_unacknowledged)], ['Unconfirmed', fmtNum(ch.messages_unconfirmed)],
      ['Uncommitted', fmtNum(ch.messages_uncommitted)],
    ]));
    chart.set(hist.points(ch.message_stats));
    const cons = ch.consumer_details || [];
    consumers.replaceChildren(...(cons.length ? cons.map((c) => h('tr', { dataset: { tag: c.consumer_tag } },
      h('td', {}, c.queue ? link(queueHref(c.queue), c.queue.name) : ''), h('td', { text: c.consumer_tag }),
      h('td', { text: fmtBool(c.ack_required) }), h('td', { text: fmtBool(c.exclusive) }),
      h('td', { text: fmtNum(c.prefetch_count) }), h('td', { text: fmtBool(c.active) })))
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No consumers.' }))]));
  }
  return { refresh, dispose() { chart.dispose(); } };
}

function definitionsView(root) {
  const summary = h('div', { id: 'defs-summary', class: 'muted' });
  const download = h('a', { id: 'defs-download', hidden: true });
  const exportBtn = h('button', { type: 'button', id: 'defs-export', text: 'Download broker definitions' });
  exportBtn.addEventListener('click', async () => {
    try {
      const d = await api('GET', '/definitions');
      const text = JSON.stringify(d, null, 2);
      const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      if (download.href) URL.revokeObjectURL(download.href);
      download.href = url;
      download.download = `warren-definitions-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-')}.json`;
      download.click();
      summary.dataset.bytes = String(text.length);
      summary.dataset.queues = String((d.queues || []).length);
      summary.dataset.exchanges = String((d.exchanges || []).length);
      summary.dataset.bindings = String((d.bindings || []).length);
      summary.textContent = `Exported ${fmtNum((d.vhosts || []).length)} virtual hosts, ${fmtNum((d.queues || []).length)} queues, `
        + `${fmtNum((d.exchanges || []).length)} exchanges, ${fmtNum((d.bindings || []).length)} bindings, ${fmtNum((d.users || []).length)} users (${fmtBytes(text.length)}).`;
    } catch (e) { toast(e.message, true); }
  });
  const file = h('input', { type: 'file', id: 'defs-file', accept: '.json,application/json' });
  const text = h('textarea', { id: 'defs-text', placeholder: 'or paste a definitions JSON document here', style: 'min-height:160px' });
  const result = h('div', { id: 'defs-import-result', dataset: { ok: '' } });
  file.addEventListener('change', async () => { if (file.files[0]) text.value = await file.files[0].text(); });
  const importBtn = h('button', { type: 'button', id: 'defs-import', text: 'Upload broker definitions' });
  importBtn.addEventListener('click', async () => {
    result.dataset.ok = '';
    try {
      JSON.parse(text.value);
    } catch (e) {
      result.className = 'bad';
      result.dataset.ok = 'false';
      result.textContent = 'Not a JSON document: ' + e.message;
      return;
    }
    try {
      await api('POST', '/definitions', text.value);
      result.className = 'ok';
      result.dataset.ok = 'true';
      result.textContent = 'Definitions imported.';
    } catch (e) {
      result.className = 'bad';
      result.dataset.ok = 'false';
      result.textContent = 'Import failed: ' + e.message;
    }
  });
  root.append(
    h('h1', { text: 'Definitions', id: 'page-definitions' }),
    h('h2', { text: 'Export' }), h('div', { class: 'panel' }, exportBtn, download, ' ', summary),
    h('h2', { text: 'Import' }), h('div', { class: 'panel' }, h('p', {}, file), text, h('p', {}, importBtn, ' ', result)),
  );
  return { refresh: async () => {} };
}

// ------------------------------------------------------------------------------------------
// Admin (issue 11): users, virtual hosts, permissions, topic permissions and limits, over
// RabbitMQ's endpoints (/api/users, /api/vhosts, /api/permissions, /api/topic-permissions,
// /api/vhost-limits, /api/user-limits). Forms are built once; only the tables refresh.
// ------------------------------------------------------------------------------------------

function adminTabs(active) {
  return h('nav', { class: 'tabs', id: 'admin-tabs' },
    h('a', { href: '#/admin', id: 'admin-tab-users', class: active === 'users' ? 'active' : '', text: 'Users' }),
    h('a', { href: '#/admin/vhosts', id: 'admin-tab-vhosts', class: active === 'vhosts' ? 'active' : '', text: 'Virtual hosts' }),
    h('a', { href: '#/admin/policies', id: 'admin-tab-policies', class: active === 'policies' ? 'active' : '', text: 'Policies' }));
}

function userHref(name) { return `#/admin/users/${enc(name)}`; }
function vhostHref(name) { return `#/admin/vhosts/${enc(name)}`; }

function tagList(t) { return Array.isArray(t) ? t.join(', ') : (t || ''); }

// A simple table: rows replaced on each refresh; `rowData` gives each row's data-*.
function plainTable(id, columns, emptyText) {
  const tbody = h('tbody', { id: id + '-rows' });
  const table = h('table', { id, dataset: { loaded: '0' } },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '', text: c.label })))), tbody);
  function set(items, rowData) {
    const rows = items.map((item) => {
      const tr = h('tr', { dataset: rowData ? rowData(item) : {} });
      for (const c of columns) {
        const v = c.render ? c.render(item) : get(item, c.key);
        const td = h('td', { class: c.num ? 'num' : '', dataset: { col: c.key } });
        if (v instanceof Node) td.appendChild(v); else td.textContent = v === undefined || v === null ? '' : String(v);
        tr.appendChild(td);
      }
      return tr;
    });
    tbody.replaceChildren(...rows);
    if (rows.length === 0) tbody.appendChild(h('tr', {}, h('td', { colspan: columns.length, class: 'muted', text: emptyText || 'None.' })));
    table.dataset.loaded = '1';
    table.dataset.count = String(items.length);
  }
  return { el: table, set };
}

// <select> of the vhosts (kept as the user chose across refreshes).
function vhostSelect(id) {
  const sel = h('select', { id });
  async function load() {
    const vhosts = await api('GET', '/vhosts?columns=name');
    const keep = sel.value;
    const names = vhosts.map((v) => v.name).sort();
    if (sel.dataset.names === JSON.stringify(names)) return;
    sel.replaceChildren(...names.map((n) => h('option', { value: n, text: n, selected: n === (keep || '/') })));
    sel.dataset.names = JSON.stringify(names);
  }
  return { el: sel, load };
}

function userSelect(id) {
  const sel = h('select', { id });
  async function load() {
    const users = await api('GET', '/users');
    const keep = sel.value;
    const names = users.map((u) => u.name).sort();
    if (sel.dataset.names === JSON.stringify(names)) return;
    sel.replaceChildren(...names.map((n) => h('option', { value: n, text: n, selected: n === keep })));
    sel.dataset.names = JSON.stringify(names);
  }
  return { el: sel, load };
}

// A form that runs `action` on submit, shows failures in a toast and in its result line.
function actionForm(id, fields, buttonText, action) {
  const result = h('span', { id: id + '-result', class: 'muted', dataset: { ok: '' } });
  const form = h('form', { class: 'grid', id },
    fields.map(([label, input]) => [h('label', { text: label, for: input.id }), input]),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: id + '-submit', text: buttonText }), ' ', result));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    result.dataset.ok = '';
    result.textContent = '';
    try {
      const msg = await action();
      result.className = 'ok';
      result.dataset.ok = 'true';
      result.textContent = msg || 'Done.';
    } catch (e) {
      result.className = 'bad';
      result.dataset.ok = 'false';
      result.textContent = e.message;
    }
  });
  return form;
}

// A limits value from a form field: '' means no limit (DELETE), else a whole number.
function limitInput(id) { return h('input', { type: 'number', id, min: 0, step: 1, placeholder: 'no limit', style: 'width:120px' }); }

async function applyLimits(base, inputs, current) {
  for (const [name, input] of Object.entries(inputs)) {
    const v = input.value.trim();
    if (v === '') {
      if (current && current[name] !== undefined) await api('DELETE', `${base}/${enc(name)}`);
    } else {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number`);
      await api('PUT', `${base}/${enc(name)}`, { value: n });
    }
  }
}

function usersView(root) {
  const perms = {};
  const t = plainTable('users-table', [
    { key: 'name', label: 'Name', render: (u) => link(userHref(u.name), u.name) },
    { key: 'tags', label: 'Tags', render: (u) => tagList(u.tags) },
    { key: 'vhosts', label: 'Can access virtual hosts', render: (u) => (perms[u.name] || []).join(', ') || 'No access' },
    { key: 'password', label: 'Has password', render: (u) => fmtBool(!!u.password_hash) },
  ], 'No users.');
  const name = h('input', { type: 'text', id: 'add-user-name', autocomplete: 'off' });
  const pass = h('input', { type: 'password', id: 'add-user-password', autocomplete: 'new-password' });
  const tags = h('input', { type: 'text', id: 'add-user-tags', placeholder: 'administrator, monitoring, ...' });
  const quick = h('span', { class: 'muted' }, 'Set: ', ['administrator', 'monitoring', 'policymaker', 'management'].map((tg) =>
    h('button', { type: 'button', class: 'link', dataset: { tag: tg }, text: tg, on: { click: () => { tags.value = tg; } } })));
  const form = actionForm('add-user', [['Username', name], ['Password', pass], ['Tags', tags]], 'Add user', async () => {
    if (!name.value) throw new Error('A user needs a name.');
    const exists = await api('GET', `/users/${enc(name.value)}`).then(() => true, (e) => { if (e.status === 404) return false; throw e; });
    if (exists) throw new Error(`User ${name.value} already exists.`);
    await api('PUT', `/users/${enc(name.value)}`, { password: pass.value, tags: tags.value.split(',').map((x) => x.trim()).filter(Boolean).join(',') });
    const added = name.value;
    name.value = ''; pass.value = ''; tags.value = '';
    await refresh();
    return `User ${added} added.`;
  });
  root.append(h('h1', { text: 'Admin', id: 'page-admin' }), adminTabs('users'),
    h('h2', { text: 'Users' }), t.el,
    h('h2', { text: 'Add a user' }), h('div', { class: 'panel' }, form, h('p', {}, quick)));
  async function refresh() {
    const [users, all] = await Promise.all([api('GET', '/users'), api('GET', '/permissions')]);
    for (const k of Object.keys(perms)) delete perms[k];
    for (const p of all) (perms[p.user] = perms[p.user] || []).push(p.vhost);
    users.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    t.set(users, (u) => ({ name: u.name, tags: tagList(u.tags) }));
  }
  return { refresh };
}

function userView(root, name) {
  const info = kv('user-info', [['Name', name, 'user-name'], ['Tags', '', 'user-tags'], ['Has password', '', 'user-has-password'], ['Limits', '', 'user-limits']]);
  let user = null;
  // Permissions of this user, per vhost.
  const permTable = plainTable('user-perms', [
    { key: 'vhost', label: 'Virtual host', render: (p) => link(vhostHref(p.vhost), p.vhost) },
    { key: 'configure', label: 'Configure regexp' },
    { key: 'write', label: 'Write regexp' },
    { key: 'read', label: 'Read regexp' },
    { key: 'clear', label: '', render: (p) => confirmButton({ key: 'perm:' + p.vhost, label: 'Clear', actionName: 'clear-permissions', dataset: { vhost: p.vhost },
      action: async () => { await api('DELETE', `/permissions/${enc(p.vhost)}/${enc(name)}`); await refresh(); } }) },
  ], 'No permissions: this user cannot use any virtual host.');
  const pv = vhostSelect('set-perm-vhost');
  const conf = h('input', { type: 'text', id: 'set-perm-configure', value: '.*' });
  const write = h('input', { type: 'text', id: 'set-perm-write', value: '.*' });
  const read = h('input', { type: 'text', id: 'set-perm-read', value: '.*' });
  const permForm = actionForm('set-perm', [['Virtual host', pv.el], ['Configure regexp', conf], ['Write regexp', write], ['Read regexp', read]], 'Set permission', async () => {
    await api('PUT', `/permissions/${enc(pv.el.value)}/${enc(name)}`, { configure: conf.value, write: write.value, read: read.value });
    await refresh();
    return `Permissions set in ${pv.el.value}.`;
  });
  // Topic permissions.
  const topicTable = plainTable('user-topic-perms', [
    { key: 'vhost', label: 'Virtual host' },
    { key: 'exchange', label: 'Exchange' },
    { key: 'write', label: 'Write regexp' },
    { key: 'read', label: 'Read regexp' },
  ], 'No topic permissions.');
  const tv = vhostSelect('set-topic-vhost');
  const tx = h('input', { type: 'text', id: 'set-topic-exchange', value: 'amq.topic' });
  const tw = h('input', { type: 'text', id: 'set-topic-write', value: '.*' });
  const tr = h('input', { type: 'text', id: 'set-topic-read', value: '.*' });
  const topicForm = actionForm('set-topic', [['Virtual host', tv.el], ['Exchange', tx], ['Write regexp', tw], ['Read regexp', tr]], 'Set topic permission', async () => {
    await api('PUT', `/topic-permissions/${enc(tv.el.value)}/${enc(name)}`, { exchange: tx.value, write: tw.value, read: tr.value });
    await refresh();
    return `Topic permission set on ${tx.value}.`;
  });
  const clearTopics = confirmButton({ key: 'topics', id: 'clear-topic', label: 'Clear topic permissions in the chosen virtual host', actionName: 'clear-topic-permissions',
    action: async () => { await api('DELETE', `/topic-permissions/${enc(tv.el.value)}/${enc(name)}`); await refresh(); } });
  // Update: tags, and the password when one is given (otherwise the stored hash is kept:
  // a PUT without either would leave the user password-less).
  const newPass = h('input', { type: 'password', id: 'update-user-password', autocomplete: 'new-password', placeholder: 'unchanged' });
  const newTags = h('input', { type: 'text', id: 'update-user-tags' });
  const updateForm = actionForm('update-user', [['Password', newPass], ['Tags', newTags]], 'Update user', async () => {
    const body = { tags: newTags.value.split(',').map((x) => x.trim()).filter(Boolean).join(',') };
    if (newPass.value) body.password = newPass.value;
    else { body.password_hash = user ? user.password_hash : ''; if (user && user.hashing_algorithm) body.hashing_algorithm = user.hashing_algorithm; }
    await api('PUT', `/users/${enc(name)}`, body);
    newPass.value = '';
    await refresh();
    return 'User updated.';
  });
  // Limits.
  const maxConn = limitInput('user-limit-max-connections');
  const maxChan = limitInput('user-limit-max-channels');
  const limitsForm = actionForm('user-limits-form', [['Max connections', maxConn], ['Max channels', maxChan]], 'Set limits', async () => {
    await applyLimits(`/user-limits/${enc(name)}`, { 'max-connections': maxConn, 'max-channels': maxChan }, user && user.limits);
    await refresh();
    return 'Limits set.';
  });
  const del = confirmButton({ key: 'delete-user', id: 'delete-user', label: 'Delete this user', actionName: 'delete-user',
    action: async () => { await api('DELETE', `/users/${enc(name)}`); toast(`User ${name} deleted.`); location.hash = '#/admin'; } });
  root.append(h('h1', { text: `User ${name}`, id: 'page-user' }), adminTabs('users'), info,
    h('h2', { text: 'Permissions' }), permTable.el, h('div', { class: 'panel' }, permForm),
    h('h2', { text: 'Topic permissions' }), topicTable.el, h('div', { class: 'panel' }, topicForm, h('p', {}, clearTopics)),
    h('h2', { text: 'Limits' }), h('div', { class: 'panel' }, limitsForm),
    h('h2', { text: 'Update this user' }), h('div', { class: 'panel' }, updateForm),
    h('h2', { text: 'Delete this user' }), h('div', { class: 'panel' }, del));
  let first = true;
  async function refresh() {
    user = await api('GET', `/users/${enc(name)}`);
    const [all, topics] = await Promise.all([
      api('GET', '/permissions'),
      api('GET', `/users/${enc(name)}/topic-permissions`).catch(() => []),
      pv.load(), tv.load(),
    ]);
    setText('user-tags', tagList(user.tags));
    setText('user-has-password', fmtBool(!!user.password_hash));
    const limits = user.limits && typeof user.limits === 'object' ? user.limits : {};
    setText('user-limits', Object.keys(limits).length ? Object.entries(limits).map(([k, v]) => `${k}: ${v}`).join(', ') : 'none');
    if (first) {
      newTags.value = tagList(user.tags);
      if (limits['max-connections'] !== undefined) maxConn.value = limits['max-connections'];
      if (limits['max-channels'] !== undefined) maxChan.value = limits['max-channels'];
      first = false;
    }
    permTable.set(all.filter((p) => p.user === name).sort((a, b) => (a.vhost < b.vhost ? -1 : 1)), (p) => ({ vhost: p.vhost }));
    topicTable.set(topics, (x) => ({ vhost: x.vhost, exchange: x.exchange }));
  }
  return { refresh };
}

function vhostsView(root) {
  let limits = {};
  const t = plainTable('vhosts-table', [
    { key: 'name', label: 'Name', render: (v) => link(vhostHref(v.name), v.name) },
    { key: 'description', label: 'Description' },
    { key: 'tags', label: 'Tags', render: (v) => tagList(v.tags) },
    { key: 'default_queue_type', label: 'Default queue type', render: (v) => (v.default_queue_type === 'undefined' ? '' : v.default_queue_type) },
    { key: 'messages', label: 'Messages', num: true, render: (v) => fmtNum(v.messages) },
    { key: 'limits', label: 'Limits', render: (v) => Object.entries(limits[v.name] || {}).map(([k, n]) => `${k}: ${n}`).join(', ') },
  ], 'No virtual hosts.');
  const name = h('input', { type: 'text', id: 'add-vhost-name', autocomplete: 'off' });
  const desc = h('input', { type: 'text', id: 'add-vhost-description' });
  const tags = h('input', { type: 'text', id: 'add-vhost-tags', placeholder: 'comma-separated' });
  const dqt = h('select', { id: 'add-vhost-default-queue-type' }, ['', 'classic', 'quorum', 'stream'].map((q) => h('option', { value: q, text: q || '(none)' })));
  const form = actionForm('add-vhost', [['Name', name], ['Description', desc], ['Tags', tags], ['Default queue type', dqt]], 'Add virtual host', async () => {
    if (!name.value) throw new Error('A virtual host needs a name.');
    const body = { description: desc.value, tags: tags.value };
    // RabbitMQ 3.10 reads `defaultqueuetype` and shows `default_queue_type`.
    if (dqt.value) { body.defaultqueuetype = dqt.value; body.default_queue_type = dqt.value; }
    await api('PUT', `/vhosts/${enc(name.value)}`, body);
    const added = name.value;
    name.value = ''; desc.value = ''; tags.value = '';
    await refresh();
    return `Virtual host ${added} added.`;
  });
  root.append(h('h1', { text: 'Admin', id: 'page-admin' }), adminTabs('vhosts'),
    h('h2', { text: 'Virtual hosts' }), t.el,
    h('h2', { text: 'Add a virtual host' }), h('div', { class: 'panel' }, form));
  async function refresh() {
    const [vhosts, lim] = await Promise.all([api('GET', '/vhosts'), api('GET', '/vhost-limits').catch(() => [])]);
    limits = Object.fromEntries(lim.map((l) => [l.vhost, l.value]));
    vhosts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    t.set(vhosts, (v) => ({ name: v.name }));
  }
  return { refresh };
}

// Admin > Policies (issue 12): user policies and operator policies as RabbitMQ's page lists
// them, an add/update form (a definition is a JSON object, as RabbitMQ's API takes it), and a
// delete button per row (/api/policies, /api/operator-policies).
function policiesView(root) {
  const columns = (kind) => [
    { key: 'vhost', label: 'Virtual host' },
    { key: 'name', label: 'Name' },
    { key: 'pattern', label: 'Pattern' },
    { key: 'apply-to', label: 'Apply to' },
    { key: 'definition', label: 'Definition', render: (p) => JSON.stringify(p.definition) },
    { key: 'priority', label: 'Priority', num: true },
    { key: 'delete', label: '', render: (p) => confirmButton({ key: `${kind}:${p.vhost}/${p.name}`, label: 'Delete', actionName: 'delete-policy',
      dataset: { vhost: p.vhost, name: p.name },
      action: async () => { await api('DELETE', `/${kind}/${enc(p.vhost)}/${enc(p.name)}`); toast(`Policy ${p.name} deleted.`); await refresh(); } }) },
  ];
  const userTable = plainTable('policies-table', columns('policies'), 'No policies.');
  const opTable = plainTable('operator-policies-table', columns('operator-policies'), 'No operator policies.');
  const vs = vhostSelect('add-policy-vhost');
  const kind = h('select', { id: 'add-policy-kind' }, [['policies', 'Policy'], ['operator-policies', 'Operator policy']].map(([v, t]) => h('option', { value: v, text: t })));
  const name = h('input', { type: 'text', id: 'add-policy-name', autocomplete: 'off' });
  const pattern = h('input', { type: 'text', id: 'add-policy-pattern', placeholder: '^amq\\.' });
  const applyTo = h('select', { id: 'add-policy-apply-to' }, ['all', 'queues', 'exchanges'].map((a) => h('option', { value: a, text: a })));
  const priority = h('input', { type: 'number', id: 'add-policy-priority', value: '0' });
  const definition = h('textarea', { id: 'add-policy-definition', rows: 3, placeholder: '{"message-ttl": 60000}' });
  const form = actionForm('add-policy', [['Kind', kind], ['Virtual host', vs.el], ['Name', name], ['Pattern', pattern], ['Apply to', applyTo],
    ['Priority', priority], ['Definition', definition]], 'Add / update policy', async () => {
    if (!name.value) throw new Error('A policy needs a name.');
    let def;
    try { def = JSON.parse(definition.value || '{}'); } catch (e) { throw new Error('The definition is not JSON: ' + e.message); }
    const prio = priority.value === '' ? 0 : Number(priority.value);
    if (!Number.isInteger(prio)) throw new Error('The priority is a whole number.');
    await api('PUT', `/${kind.value}/${enc(vs.el.value)}/${enc(name.value)}`,
      { pattern: pattern.value, definition: def, 'apply-to': applyTo.value, priority: prio });
    const added = name.value;
    await refresh();
    return `Policy ${added} set.`;
  });
  root.append(h('h1', { text: 'Admin', id: 'page-policies' }), adminTabs('policies'),
    h('h2', { text: 'User policies' }), userTable.el,
    h('h2', { text: 'Operator policies' }), opTable.el,
    h('h2', { text: 'Add / update a policy' }), h('div', { class: 'panel' }, form));
  async function refresh() {
    const [user, op] = await Promise.all([api('GET', '/policies'), api('GET', '/operator-policies'), vs.load()]);
    const key = (p) => ({ vhost: p.vhost, name: p.name });
    userTable.set(user, key);
    opTable.set(op, key);
  }
  return { refresh };
}

function vhostView(root, name) {
  const info = kv('vhost-info', [['Name', name, 'vhost-name'], ['Description', '', 'vhost-description'], ['Tags', '', 'vhost-tags'],
    ['Default queue type', '', 'vhost-default-queue-type'], ['Messages', '', 'vhost-messages'], ['Limits', '', 'vhost-limits']]);
  const permTable = plainTable('vhost-perms', [
    { key: 'user', label: 'User', render: (p) => link(userHref(p.user), p.user) },
    { key: 'configure', label: 'Configure regexp' },
    { key: 'write', label: 'Write regexp' },
    { key: 'read', label: 'Read regexp' },
    { key: 'clear', label: '', render: (p) => confirmButton({ key: 'perm:' + p.user, label: 'Clear', actionName: 'clear-permissions', dataset: { user: p.user },
      action: async () => { await api('DELETE', `/permissions/${enc(name)}/${enc(p.user)}`); await refresh(); } }) },
  ], 'No user may use this virtual host.');
  const pu = userSelect('vhost-perm-user');
  const conf = h('input', { type: 'text', id: 'vhost-perm-configure', value: '.*' });
  const write = h('input', { type: 'text', id: 'vhost-perm-write', value: '.*' });
  const read = h('input', { type: 'text', id: 'vhost-perm-read', value: '.*' });
  const permForm = actionForm('vhost-perm', [['User', pu.el], ['Configure regexp', conf], ['Write regexp', write], ['Read regexp', read]], 'Set permission', async () => {
    await api('PUT', `/permissions/${enc(name)}/${enc(pu.el.value)}`, { configure: conf.value, write: write.value, read: read.value });
    await refresh();
    return `Permissions set for ${pu.el.value}.`;
  });
  let current = {};
  const maxConn = limitInput('vhost-limit-max-connections');
  const maxQueues = limitInput('vhost-limit-max-queues');
  const limitsForm = actionForm('vhost-limits-form', [['Max connections', maxConn], ['Max queues', maxQueues]], 'Set limits', async () => {
    await applyLimits(`/vhost-limits/${enc(name)}`, { 'max-connections': maxConn, 'max-queues': maxQueues }, current);
    await refresh();
    return 'Limits set.';
  });
  const del = confirmButton({ key: 'delete-vhost', id: 'delete-vhost', label: 'Delete this virtual host', actionName: 'delete-vhost',
    action: async () => { await api('DELETE', `/vhosts/${enc(name)}`); toast(`Virtual host ${name} deleted.`); location.hash = '#/admin/vhosts'; } });
  root.append(h('h1', { text: `Virtual host ${name}`, id: 'page-vhost' }), adminTabs('vhosts'), info,
    h('h2', { text: 'Permissions' }), permTable.el, h('div', { class: 'panel' }, permForm),
    h('h2', { text: 'Limits' }), h('div', { class: 'panel' }, limitsForm),
    h('h2', { text: 'Delete this virtual host' }), h('div', { class: 'panel' },
      h('p', { class: 'muted', text: 'Deleting a virtual host deletes its exchanges, queues, bindings and messages, and closes its connections.' }), del));
  let first = true;
  async function refresh() {
    const [v, all, lim] = await Promise.all([
      api('GET', `/vhosts/${enc(name)}`),
      api('GET', '/permissions'),
      api('GET', `/vhost-limits/${enc(name)}`).catch(() => []),
      pu.load(),
    ]);
    current = (lim[0] && lim[0].value) || {};
    setText('vhost-description', v.description || '');
    setText('vhost-tags', tagList(v.tags));
    setText('vhost-default-queue-type', v.default_queue_type === 'undefined' ? '' : v.default_queue_type || '');
    setText('vhost-messages', fmtNum(v.messages || 0));
    setText('vhost-limits', Object.keys(current).length ? Object.entries(current).map(([k, n]) => `${k}: ${n}`).join(', ') : 'none');
    if (first) {
      if (current['max-connections'] !== undefined) maxConn.value = current['max-connections'];
      if (current['max-queues'] !== undefined) maxQueues.value = current['max-queues'];
      first = false;
    }
    permTable.set(all.filter((p) => p.vhost === name).sort((a, b) => (a.user < b.user ? -1 : 1)), (p) => ({ user: p.user }));
  }
  return { refresh };
}

// ------------------------------------------------------------------------------------------
// Router and refresh loop.
// ------------------------------------------------------------------------------------------

const ROUTES = [
  [/^\/login$/, 'login', loginView],
  [/^\/?$/, 'overview', overviewView],
  [/^\/queues$/, 'queues', queuesView],
  [/^\/queues\/([^/]+)\/([^/]+)$/, 'queues', queueView],
  [/^\/exchanges$/, 'exchanges', exchangesView],
  [/^\/exchanges\/([^/]+)\/([^/]+)$/, 'exchanges', exchangeView],
  [/^\/connections$/, 'connections', connectionsView],
  [/^\/connections\/([^/]+)$/, 'connections', connectionView],
  [/^\/channels$/, 'channels', channelsView],
  [/^\/channels\/([^/]+)$/, 'channels', channelView],
  [/^\/definitions$/, 'definitions', definitionsView],
  [/^\/admin$/, 'admin', usersView],
  [/^\/admin\/users\/([^/]+)$/, 'admin', userView],
  [/^\/admin\/vhosts$/, 'admin', vhostsView],
  [/^\/admin\/vhosts\/([^/]+)$/, 'admin', vhostView],
  [/^\/admin\/policies$/, 'admin', policiesView],
];

let current = null;
let generation = 0;

async function runRefresh(view, gen) {
  if (view.busy) return;
  view.busy = true;
  try {
    await view.refresh();
    if (gen === generation) document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    // A failed login went to the login page; a refusal (`not_authorised`) is shown.
    const refused = e.status === 401 && e.body && e.body.error === 'not_authorised';
    if (gen === generation && (e.status !== 401 || refused)) toast(e.message, true);
  } finally {
    view.busy = false;
  }
}

function route() {
  const path = (location.hash || '#/').slice(1) || '/';
  if (!session.auth && path !== '/login') { goLogin(); return; }
  let match = null;
  for (const [re, nav, fn] of ROUTES) {
    const m = path.match(re);
    if (m) { match = { nav, fn, args: m.slice(1).map(decodeURIComponent) }; break; }
  }
  if (!match) { location.hash = '#/'; return; }
  if (current && current.dispose) current.dispose();
  generation++;
  armed.clear();
  const root = document.getElementById('view');
  root.replaceChildren();
  // A message about the page we left does not belong on the next one.
  document.getElementById('status').replaceChildren();
  document.getElementById('top').hidden = match.nav === 'login';
  setText('whoami', session.user);
  // The admin pages are for administrators (the API refuses everyone else anyway).
  const tags = session.tags;
  document.getElementById('nav-admin').hidden = Array.isArray(tags) && !tags.includes('administrator');
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === match.nav);
  document.body.dataset.page = match.nav;
  current = match.fn(root, ...match.args);
  runRefresh(current, generation);
}

setInterval(() => {
  if (current && !document.hidden) runRefresh(current, generation);
}, REFRESH_MS);

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  location.hash = '#/login';
});
window.addEventListener('hashchange', route);
route();
