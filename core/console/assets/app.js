// The mqgate console page: talks to /api/v1/ only, writes data with textContent only
// (never as HTML), keeps the CSRF token in memory (a reload asks /api/v1/session).
'use strict';

const state = {
  csrf: '',
  role: '',
  offset: 0,
  limit: 50,
  sort: 'client_id',
  order: 'asc',
  timer: null,
  history: []
};
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function showError(message) {
  const p = $('error');
  p.textContent = message || '';
  p.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const method = options.method || 'GET';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  const resp = await fetch('/api/v1/' + path, {method, headers, credentials: 'same-origin'});
  let body = {};
  try {
    body = await resp.json();
  } catch (e) {
    body = {error: 'not JSON'};
  }
  if (resp.status === 401 && path !== 'login') {
    route('login');
  }
  return {status: resp.status, body};
}

function show(view) {
  for (const s of document.querySelectorAll('main > section'))
    s.hidden = s.id !== 'view-' + view;
  $('nav').hidden = view === 'login';
  if (state.timer) {
    clearInterval(state.timer);
    state.timer = null;
  }
}

function route(name) {
  if (location.hash !== '#' + name)
    location.hash = name;
  else
    render();
}

async function render() {
  showError('');
  const hash = decodeURIComponent(location.hash.slice(1));
  if (!state.csrf && hash !== 'login') {
    const me = await api('session');
    if (me.status !== 200) {
      show('login');
      return;
    }
    state.csrf = me.body.csrf || '';
    state.role = me.body.role;
    $('who').textContent = me.body.user + ' (' + me.body.role + ')';
  }
  if (hash === 'login')
    show('login');
  else if (hash.startsWith('device/'))
    await renderDevice(hash.slice(7));
  else if (hash === 'broker')
    await renderBroker();
  else
    await renderDevices();
}

// --- login ---------------------------------------------------------------------------

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const user = $('login-user').value, password = $('login-password').value;
  const bytes = new TextEncoder().encode(user + ':' + password);
  let bin = '';
  for (const b of bytes)
    bin += String.fromCharCode(b);
  const r = await api('login', {method: 'POST', headers: {Authorization: 'Basic ' + btoa(bin)}});
  $('login-password').value = '';
  loggedIn(r);
});

// Over HTTPS, a login with the client certificate the browser presented (no password).
$('login-cert-box').hidden = location.protocol !== 'https:';
$('login-cert')
    .addEventListener('click', async () => loggedIn(await api('login', {method: 'POST'})));

function loggedIn(r) {
  if (r.status !== 200) {
    showError(r.body.error || 'login failed');
    return;
  }
  state.csrf = r.body.csrf;
  state.role = r.body.role;
  $('who').textContent = r.body.user + ' (' + r.body.role + ')';
  route('devices');
}

$('logout').addEventListener('click', async () => {
  await api('logout', {method: 'POST'});
  state.csrf = '';
  route('login');
});

// --- devices ---------------------------------------------------------------------------

function expiryClass(daysLeft) {
  if (daysLeft === undefined) return '';
  if (daysLeft < 0) return 'expired';
  return daysLeft < 30 ? 'warn' : '';
}

async function renderDevices() {
  show('devices');
  const q = new URLSearchParams({
    limit: state.limit,
    offset: state.offset,
    sort: state.sort,
    order: state.order,
    state: $('state').value
  });
  if ($('search').value) q.set('search', $('search').value);
  const r = await api('clients?' + q.toString());
  if (r.status !== 200) {
    showError(r.body.error);
    return;
  }
  const tbody = $('devices').querySelector('tbody');
  tbody.replaceChildren();
  for (const c of r.body.clients) {
    const tr = el('tr', null, c.connected ? 'online' : 'offline');
    const link = el('a', c.client_id);
    link.href = '#device/' + encodeURIComponent(c.client_id);
    const idCell = el('td');
    idCell.appendChild(link);
    tr.appendChild(idCell);
    tr.appendChild(el('td', c.identity));
    tr.appendChild(el('td', c.connected ? 'connected' : 'offline'));
    tr.appendChild(el('td', c.listener || ''));
    tr.appendChild(el('td', c.peer || ''));
    tr.appendChild(el('td', c.connected_since || c.last_seen || ''));
    tr.appendChild(el('td', c.subscriptions));
    tr.appendChild(el('td', c.queued));
    const cert = c.certificate || {};
    tr.appendChild(el('td', cert.subject || ''));
    tr.appendChild(
        el('td', cert.not_after ? cert.not_after + ' (' + cert.days_left + ' d)' : '',
           expiryClass(cert.days_left)));
    tbody.appendChild(tr);
  }
  const last = Math.min(r.body.total, state.offset + r.body.clients.length);
  $('page').textContent =
      r.body.total ? (state.offset + 1) + '–' + last + ' of ' + r.body.total : 'no devices';
  $('prev').disabled = state.offset === 0;
  $('next').disabled = last >= r.body.total;
  for (const th of $('devices').querySelectorAll('th[data-sort]')) {
    th.classList.toggle('sorted-asc', th.dataset.sort === state.sort && state.order === 'asc');
    th.classList.toggle('sorted-desc', th.dataset.sort === state.sort && state.order === 'desc');
  }
}

$('device-filter').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.offset = 0;
  renderDevices();
});
$('prev').addEventListener('click', () => {
  state.offset = Math.max(0, state.offset - state.limit);
  renderDevices();
});
$('next').addEventListener('click', () => {
  state.offset += state.limit;
  renderDevices();
});
for (const th of document.querySelectorAll('th[data-sort]')) {
  th.addEventListener('click', () => {
    if (state.sort === th.dataset.sort)
      state.order = state.order === 'asc' ? 'desc' : 'asc';
    else {
      state.sort = th.dataset.sort;
      state.order = 'asc';
    }
    state.offset = 0;
    renderDevices();
  });
}

// --- one device ----------------------------------------------------------------------

function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === '') continue;
    dl.appendChild(el('dt', k));
    dl.appendChild(el('dd', v));
  }
}

async function renderDevice(id, keepResult) {
  show('device');
  $('device-id').textContent = id;
  if (!keepResult) $('action-result').hidden = true;
  const r = await api('clients/' + encodeURIComponent(id));
  if (r.status !== 200) {
    showError(r.body.error);
    return;
  }
  const d = r.body;
  fill($('device-session'), [
    ['state', d.connected ? 'connected' : 'offline'], ['identity', d.identity],
    ['persistent', String(d.persistent)], ['protocol', d.protocol], ['listener', d.listener],
    ['peer', d.peer], ['connected since', d.connected_since], ['last seen', d.last_seen],
    ['expires', d.expires_at], ['keep alive (s)', d.keep_alive], ['queued', d.queued],
    ['in flight', d.inflight], ['TLS', d.tls_version ? d.tls_version + ' ' + d.cipher : '']
  ]);
  const tbody = $('device-subs').querySelector('tbody');
  tbody.replaceChildren();
  for (const s of d.subscription_list) {
    const tr = el('tr');
    tr.appendChild(el('td', s.filter));
    tr.appendChild(el('td', s.qos));
    tbody.appendChild(tr);
  }
  const chain = $('device-chain');
  chain.replaceChildren();
  for (const c of d.chain || []) {
    const dl = el('dl', null, expiryClass(c.days_left));
    fill(dl, [
      ['subject', c.subject], ['issuer', c.issuer], ['serial', c.serial],
      ['not before', c.not_before], ['not after', c.not_after + ' (' + c.days_left + ' d)']
    ]);
    chain.appendChild(dl);
    chain.appendChild(el('pre', c.pem));
  }
  if (!d.chain) chain.appendChild(el('p', 'no client certificate'));
  const admin = state.role === 'admin';
  $('act-disconnect').disabled = !admin || !d.connected;
  $('act-revoke').disabled = !admin || !d.chain;
  $('act-delete').disabled = !admin || d.connected || !d.persistent;
  // A read-only login sees why (the server refuses its actions anyway: 403).
  for (const id of ['act-disconnect', 'act-revoke', 'act-delete'])
    $(id).title = admin ? '' : 'read-only login: actions need an admin';
}

async function act(what, method, path, question) {
  const id = decodeURIComponent(location.hash.slice(8));
  if (!window.confirm(question + '\n\n' + id)) return;
  const r = await api(path(encodeURIComponent(id)), {method});
  const out = $('action-result');
  out.hidden = false;
  out.textContent = what + ': HTTP ' + r.status + '\n' + JSON.stringify(r.body, null, 2);
  out.className = r.status === 200 ? '' : 'error';
  await renderDevice(id, true);  // the session as it is now
}

$('act-disconnect')
    .addEventListener(
        'click',
        () =>
            act('disconnect', 'POST', (id) => 'clients/' + id + '/disconnect',
                'Disconnect this client?'));
$('act-revoke')
    .addEventListener(
        'click',
        () =>
            act('revoke', 'POST', (id) => 'clients/' + id + '/revoke',
                'Revoke this device\'s certificate? It is added to the CRL and cut off now.'));
$('act-delete')
    .addEventListener(
        'click',
        () => act(
            'delete session', 'DELETE', (id) => 'sessions/' + id, 'Delete this offline session?'));

// --- broker ----------------------------------------------------------------------------

const CHARTS = [
  ['clients_connected', 'connections', false],
  ['messages_received', 'messages in /s', true],
  ['messages_sent', 'messages out /s', true],
  ['messages_dropped', 'dropped /s', true],
  ['held_publishers', 'held publishers', false],
  ['tls_handshakes', 'TLS handshakes /s', true],
  ['loop_lag_ms', 'loop lag (ms)', false],
];
const HISTORY = 150;  // samples kept: 5 minutes at one every 2 s

function drawChart(canvas, label, values) {
  const g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  g.strokeStyle = '#1d3557';
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * w, y = h - 14 - (v / max) * (h - 20);
    if (i === 0)
      g.moveTo(x, y);
    else
      g.lineTo(x, y);
  });
  g.stroke();
  g.fillStyle = '#1d232a';
  g.font = '11px system-ui';
  const now = values.length ? values[values.length - 1] : 0;
  g.fillText(label + ': ' + Math.round(now * 10) / 10 + ' (max ' + Math.round(max) + ')', 4, h - 2);
}

async function pollBroker() {
  const r = await api('broker');
  if (r.status !== 200) {
    showError(r.body.error);
    return;
  }
  const b = r.body, c = b.counters;
  const t = Date.now() / 1000;
  state.history.push({t, c});
  if (state.history.length > HISTORY + 1) state.history.shift();
  fill($('counters'), [
    ['version', b.version], ['uptime (s)', b.uptime_s], ...Object.entries(c).map(([k, v]) => [k, v])
  ]);
  const charts = $('charts');
  if (!charts.childElementCount) {
    for (const [key, label] of CHARTS) {
      const box = el('div', null, 'chart');
      const canvas = el('canvas');
      canvas.width = 260;
      canvas.height = 80;
      canvas.dataset.key = key;
      canvas.dataset.label = label;
      box.appendChild(canvas);
      charts.appendChild(box);
    }
  }
  for (const canvas of charts.querySelectorAll('canvas')) {
    const [key, , rate] = CHARTS.find((x) => x[0] === canvas.dataset.key);
    const values = [];
    for (let i = rate ? 1 : 0; i < state.history.length; i++) {
      const cur = state.history[i], prev = state.history[i - 1];
      values.push(
          rate ? Math.max(0, (cur.c[key] - prev.c[key]) / Math.max(0.001, cur.t - prev.t)) :
                 cur.c[key]);
    }
    drawChart(canvas, canvas.dataset.label, values);
  }
  renderCluster(b.cluster);
  const box = $('listeners');
  box.replaceChildren();
  for (const l of b.listeners) {
    box.appendChild(el('h3', l.name + ' — ' + l.bind + ' (port ' + l.port + ')'));
    const dl = el('dl');
    fill(dl, [
      ['TLS', String(l.tls)], ['WebSocket', String(l.websocket)], ['connections', l.connections],
      ['plugins', l.plugins.join(' → ') || 'none'], ['client certificates', l.client_cert],
      [
        'CRL',
        l.crl ? l.crl.file + ': ' + l.crl.entries + ' revoked, next update ' + l.crl.next_update +
                (l.crl.stale ? ' (STALE)' : '') :
                ''
      ]
    ]);
    box.appendChild(dl);
    for (const cert of l.certificates || []) {
      const cd = el('dl', null, expiryClass(cert.days_left));
      fill(cd, [
        ['serves', cert.subject], ['issuer', cert.issuer],
        ['expires', cert.not_after + ' (' + cert.days_left + ' d)']
      ]);
      box.appendChild(cd);
    }
  }
}

// The cluster block of the broker page: this node, the others it knows, the traffic.
function renderCluster(c) {
  const box = $('cluster');
  box.replaceChildren();
  if (!c) {
    box.appendChild(el('p', 'Not in a cluster (no [cluster] section).'));
    return;
  }
  const dl = el('dl');
  fill(dl, [
    ['cluster', c.name], ['this node', c.node],
    ['NATS', c.connected ? 'connected' : 'disconnected (local clients only)'],
    ['other nodes', c.other_nodes],
    ['filters here / on the others', c.local_filters + ' / ' + c.remote_filters],
    [
      'interest',
      c.interest_certain ? 'known: only wanted messages leave' : 'unsure: every message leaves'
    ],
    [
      'messages sent / kept local / received',
      c.messages_sent + ' / ' + c.messages_kept_local + ' / ' + c.messages_received
    ]
  ]);
  box.appendChild(dl);
}

async function renderBroker() {
  show('broker');
  await pollBroker();
  state.timer = setInterval(pollBroker, 2000);
}

window.addEventListener('hashchange', render);
render();
