// Shoal's live dashboard. It reads /dashboard/stream (server-sent events, read with fetch so
// the admin token can ride in the Authorization header; EventSource cannot send one) and
// redraws at most once per animation frame, touching only the DOM nodes whose text changed,
// so 9 nodes and 100 groups stay cheap. The token lives in sessionStorage, never in the page.
(() => {
  'use strict';
  const MAX_EVENTS = 200, MAX_GROUP_ROWS = 100;
  const $ = (sel) => document.querySelector(sel);
  const state = { view: null, token: sessionStorage.getItem('shoal-admin-token') || '',
                  last: {}, drawPending: false, cards: new Map(), rows: new Map() };

  // ------------------------------------------------------------------ the stream
  const headers = () => (state.token ? { Authorization: 'Bearer ' + state.token } : {});

  function setConn(s, text) {
    const el = $('#conn');
    el.dataset.state = s;
    el.textContent = text;
  }

  async function connect() {
    setConn('connecting', 'connecting…');
    try {
      const r = await fetch('/dashboard/stream', { headers: headers(), cache: 'no-store' });
      if (r.status === 401) {
        setConn('token', 'admin token needed');
        $('#token').focus();
        return; // the token form calls connect() again
      }
      if (!r.ok) throw new Error('the stream answered ' + r.status);
      setConn('live', 'live');
      banner('');
      const reader = r.body.getReader();
      const text = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += text.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of chunk.split('\n')) {
            if (line.startsWith('data: ')) receive(JSON.parse(line.slice(6)));
          }
        }
      }
    } catch (e) {
      // the server is gone, or the network: said below, retried
    }
    setConn('lost', 'connection lost: retrying');
    banner('The server of this page does not answer (down?). What you see is the last view it sent.');
    setTimeout(connect, 1000);
  }

  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('#token').value.trim();
    sessionStorage.setItem('shoal-admin-token', state.token);
    $('#token').value = '';
    connect();
  });

  function receive(msg) {
    state.view = msg.view;
    for (const e of msg.events) addEvent(e);
    if (!state.drawPending) {
      state.drawPending = true;
      requestAnimationFrame(() => { state.drawPending = false; draw(); });
    }
  }

  // ------------------------------------------------------------------ helpers
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(e, t) {
    t = String(t);
    if (e.textContent !== t) e.textContent = t;
  }
  function banner(t) {
    const b = $('#banner');
    b.hidden = !t;
    setText(b, t);
  }
  const bytes = (n) => (n > 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : (n / 1024).toFixed(0) + ' KiB');
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();

  // Every node the view knows of, by id: its entry (none for a peer only named in links).
  function nodesById(view) {
    const out = new Map();
    for (const [key, n] of Object.entries(view.nodes)) {
      const st = n.up ? n.status : null;
      if (st) state.last[key] = st;
      out.set(n.id || key, { key, n, st, last: state.last[key] || null });
      for (const peer of Object.keys((st || {}).links || {})) {
        if (!out.has(+peer)) out.set(+peer, null);
      }
    }
    const order = (x) => (typeof x === 'number' ? x : Infinity); // never-answered nodes last
    return new Map([...out.entries()].sort((a, b) => order(a[0]) - order(b[0])));
  }

  // Each group's (term, leader) by the answering nodes: the highest term reported.
  function groupLeaders(nodes) {
    const best = {};
    for (const v of nodes.values()) {
      if (!v || !v.st) continue;
      for (const [gid, g] of Object.entries(v.st.groups)) {
        const leader = g.role === 'candidate' ? 0 : g.leader;
        const b = best[gid];
        if (!b || g.term > b.term || (g.term === b.term && leader > b.leader)) best[gid] = { term: g.term, leader };
      }
    }
    return best;
  }

  const blocks = (st, peer) => !!st && !!st.faults &&
    (st.faults.block_to.includes(peer) || st.faults.block_from.includes(peer));

  // ------------------------------------------------------------------ drawing
  function draw() {
    const view = state.view;
    if (!view) return;
    const started = performance.now();
    setText($('#source'), view.source);
    const nodes = nodesById(view);
    const leaders = groupLeaders(nodes);
    drawSummary(nodes, leaders, view);
    drawLinks(nodes);
    drawCards(nodes);
    drawGroups(nodes, leaders, view);
    drawDirectory(nodes);
    drawFaultPanel(nodes, view);
    drawServices(view);
    drawEventLog(nodes);
    drawAborts(nodes);
    drawGateways(view);
    document.body.dataset.drawMs = (performance.now() - started).toFixed(1); // for scale checks
  }

  function drawSummary(nodes, leaders, view) {
    const meta = leaders['0'] || { term: 0, leader: 0 };
    const known = [...nodes.values()].filter((v) => v);
    const up = known.filter((v) => v.st).length;
    const s = $('#summary');
    s.dataset.leader = String(meta.leader);
    const el = view.elections && view.elections['0'];
    const why = el ? ` · last election ${clock(el.t)}: ${el.why}` : '';
    const groups = Object.keys(leaders).length;
    s.innerHTML = '';
    s.append('meta group leader ', Object.assign(document.createElement('b'),
      { id: 'leader', textContent: meta.leader ? 'n' + meta.leader : 'none' }),
      ` in term ${meta.term} · ${up} of ${known.length} watched nodes up · ${groups} group${groups === 1 ? '' : 's'}${why}`);
  }

  function drawLinks(nodes) {
    const svg = $('#links');
    const ids = [...nodes.keys()];
    const pos = new Map(ids.map((id, i) => {
      const a = (2 * Math.PI * i) / ids.length - Math.PI / 2;
      return [id, [Math.round(120 * Math.cos(a)), Math.round(120 * Math.sin(a))]];
    }));
    const parts = [];
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const a = ids[i], b = ids[j], va = nodes.get(a), vb = nodes.get(b);
        const sa = va && va.st, sb = vb && vb.st;
        if (!sa && !sb) continue;
        const cut = blocks(sa, b) || blocks(sb, a);
        const dead = (va && !va.st) || (vb && !vb.st);
        const ra = ((va && va.n.rates) || {})[b], rb = ((vb && vb.n.rates) || {})[a];
        const rate = Math.round(((ra && ra.sent_per_s) || 0) + ((rb && rb.sent_per_s) || 0));
        const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
        const w = Math.min(6, 1 + Math.log10(1 + rate));
        const cls = cut ? 'cut' : dead ? 'dead' : '';
        parts.push(`<line data-link="${a}-${b}" class="${cls}" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke-width="${w.toFixed(1)}"><title>n${a}–n${b}: ${cut ? 'cut by a fault' : rate + ' msgs/s'}</title></line>`);
        if (!cut && !dead && ids.length <= 5) parts.push(`<text class="rate" x="${(x1 + x2) / 2}" y="${(y1 + y2) / 2 - 6}">${rate}/s</text>`);
        if (cut) parts.push(`<text class="rate" style="fill:var(--cut)" x="${(x1 + x2) / 2}" y="${(y1 + y2) / 2 - 6}">✂ cut</text>`);
      }
    }
    for (const id of ids) {
      const v = nodes.get(id);
      const [x, y] = pos.get(id);
      const role = !v ? 'unknown' : !v.st ? 'down' : v.st.role;
      parts.push(`<circle data-node="${id}" class="${role}" cx="${x}" cy="${y}" r="22"><title>n${id}: ${v ? role : 'peer (not watched from here)'}</title></circle><text x="${x}" y="${y}">${!v || v.st ? 'n' + id : '✕'}</text>`);
    }
    const html = parts.join('');
    if (svg.dataset.last !== html) { svg.innerHTML = html; svg.dataset.last = html; }
  }

  function card(key) {
    let c = state.cards.get(key);
    if (c) return c;
    const root = el('div', 'card');
    root.dataset.key = key;
    const h = el('h3');
    c = { root, name: el('span'), state: el('span', 'state'), err: el('div', 'err'),
          figures: el('table', 'figures'), cells: {}, links: el('div', 'links'), note: el('div', 'cutnote') };
    h.append(c.name, c.state);
    for (const f of ['term', 'leader', 'commit / applied', 'last index', 'WAL', 'uptime', 'alarms']) {
      const tr = el('tr');
      const td = el('td');
      tr.append(el('td', '', f), td);
      c.figures.append(tr);
      c.cells[f] = td;
    }
    root.append(h, c.err, c.figures, c.note, c.links);
    $('#nodes').append(root);
    state.cards.set(key, c);
    return c;
  }

  function drawCards(nodes) {
    for (const [id, v] of nodes) {
      if (!v) continue;
      const c = card(v.key);
      const st = v.st || v.last;
      const down = !v.st;
      c.root.dataset.node = String(id);
      c.root.classList.toggle('is-down', down);
      c.root.classList.toggle('is-leader', !down && st && st.role === 'leader');
      setText(c.name, `n${id} · ${v.n.endpoint}`);
      setText(c.state, down ? 'DOWN' : st.role);
      setText(c.err, down ? (v.n.error || 'no answer') + (st ? ' — last known figures shown' : '')
        : v.n.late ? 'late: ' + v.n.late : '');
      if (!st) continue;
      const meta = st.groups['0'] || {};
      setText(c.cells.term, st.term);
      setText(c.cells.leader, st.leader ? 'n' + st.leader : 'none');
      setText(c.cells['commit / applied'], `${meta.commit} / ${meta.applied}`);
      setText(c.cells['last index'], meta.last_index);
      setText(c.cells.WAL, bytes(st.wal_bytes));
      setText(c.cells.uptime, st.uptime_s + ' s');
      setText(c.cells.alarms, st.alarms.length ? st.alarms.map((a) => a[1] + '@' + a[0]).join(', ') : 'none');
      const f = st.faults || { block_to: [], block_from: [] };
      const cut = [...new Set([...f.block_to, ...f.block_from])];
      setText(c.note, cut.length ? 'links cut to ' + cut.map((p) => 'n' + p).join(', ') : '');
      // Each link: messages per second each way, and a follower's lag behind this leader.
      const lines = Object.entries(st.links || {}).map(([peer, l]) => {
        const r = (v.n.rates || {})[peer] || { sent_per_s: 0, received_per_s: 0 };
        const match = meta.match && meta.match[peer];
        const lag = st.role === 'leader' && match !== undefined ? ` · lag ${meta.last_index - match}` : '';
        return `→n${peer} ${l.connected ? '' : '(not connected) '}${r.sent_per_s.toFixed(0)}/s out ${r.received_per_s.toFixed(0)}/s in${lag}`;
      });
      setText(c.links, lines.join('\n'));
      c.links.style.whiteSpace = 'pre-line';
    }
  }

  function drawGroups(nodes, leaders, view) {
    const ids = [...nodes.keys()].filter((id) => nodes.get(id));
    const head = $('#group-head');
    const want = ['group', 'leader', 'term', 'commit', 'intents', ...ids.map((i) => 'n' + i), 'last election'].join('|');
    if (head.dataset.cols !== want) {
      head.dataset.cols = want;
      head.innerHTML = '';
      for (const c of want.split('|')) head.append(el('th', '', c));
      for (const r of state.rows.values()) r.tr.remove();
      state.rows.clear();
    }
    const filter = $('#group-filter').value.trim().toLowerCase();
    const gids = Object.keys(leaders).sort((a, b) => a - b);
    const body = $('#groups tbody');
    let shown = 0;
    const keep = new Set();
    for (const gid of gids) {
      const cells = [gid, leaders[gid].leader ? 'n' + leaders[gid].leader : 'none', leaders[gid].term, 0, 0];
      const roles = [];
      for (const id of ids) {
        const v = nodes.get(id);
        const g = v.st && v.st.groups[gid];
        if (!v.st) roles.push(['down', 'r-down']);
        else if (!g) roles.push(['–', '']);
        else {
          cells[3] = Math.max(cells[3], g.commit);
          cells[4] = Math.max(cells[4], g.intents || 0); // keys locked by transactions in flight
          const lead = nodes.get(leaders[gid].leader);
          const lg = lead && lead.st && lead.st.groups[gid];
          const lag = lg && lg.match && lg.match[id] !== undefined && g.role !== 'leader' ? ` −${lg.last_index - lg.match[id]}` : '';
          roles.push([`${g.role[0].toUpperCase()} ${g.applied}${lag}`, 'r-' + g.role]);
        }
      }
      const e = view.elections && view.elections[gid];
      const text = [...cells, ...roles.map((r) => r[0]), e ? `${clock(e.t)}: ${e.why}` : ''];
      if (filter && !text.join(' ').toLowerCase().includes(filter)) continue;
      if (++shown > MAX_GROUP_ROWS) continue;
      keep.add(gid);
      let row = state.rows.get(gid);
      if (!row) {
        const tr = el('tr');
        tr.dataset.group = gid;
        row = { tr, tds: text.map(() => tr.appendChild(el('td'))) };
        state.rows.set(gid, row);
      }
      if (row.tr.parentNode !== body || row.tr !== body.children[keep.size - 1]) body.insertBefore(row.tr, body.children[keep.size - 1] || null);
      text.forEach((t, i) => setText(row.tds[i], t));
      roles.forEach((r, i) => { if (row.tds[5 + i].className !== r[1]) row.tds[5 + i].className = r[1]; });
    }
    for (const [gid, row] of state.rows) if (!keep.has(gid)) { row.tr.remove(); state.rows.delete(gid); }
    setText($('#group-count'), shown > MAX_GROUP_ROWS
      ? `showing ${MAX_GROUP_ROWS} of ${shown} groups: filter to see others` : `${shown} group${shown === 1 ? '' : 's'}`);
  }

  function drawDirectory(nodes) {
    const st = [...nodes.values()].map((v) => v && v.st).find((s) => s);
    if (!st) return;
    const dir = Object.entries(st.directory || {});
    setText($('#directory'), dir.length
      ? dir.slice(0, 200).map(([g, hosts]) => `group ${g} on ${hosts.map((h) => 'n' + h).join(', ')}`).join(' · ') +
        (dir.length > 200 ? ` … and ${dir.length - 200} more` : '')
      : 'only the meta group (0), on every member');
    const map = st.shard_map;
    setText($('#shards'), map
      ? map.map(([s, e, g]) => `[${JSON.stringify(s)}, ${e ? JSON.stringify(e) : '∞'}) → group ${g}`).join(' · ')
      : 'not sharded: the meta group holds every key');
  }

  function drawServices(view) {
    const panel = $('#services-panel');
    panel.hidden = !('services' in view); // a node's own page has no registry reader
    if (panel.hidden) return;
    const reg = view.services;
    const note = (t) => `<tr><td colspan="3" class="msg">${esc(t)}</td></tr>`;
    const rows = !reg || reg.error ? []
      : Object.entries(reg.services).map(([name, list]) => [name, String(list.length),
          list.slice(0, 20).map((i) => `${i.id} ${i.address}${i.zone ? ' ' + i.zone : ''}${i.version ? ' v' + i.version : ''}`)
            .join(' · ') + (list.length > 20 ? ` … and ${list.length - 20} more` : '')]);
    const html = !reg ? note('reading the registry…') : reg.error ? note(reg.error)
      : !rows.length ? note('no service registered')
        : rows.map((r) => `<tr data-service="${esc(r[0])}">${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('');
    fillRows('#services tbody', html);
    fillRows('#methods tbody', methodRows((reg && !reg.error && reg.methods) || {}));
    fillRows('#callers tbody', callerRows((reg && !reg.error && reg.methods) || {}));
    const pb = Object.entries((reg && reg.primary_backup) || {});
    $('#failover-panel').hidden = !pb.length;
    fillRows('#failover tbody', pb.map(([name, s]) => `<tr data-service="${esc(name)}">${[name,
      s.primary ? `n${s.primary} ${s.address || ''}` : 'none', s.token || '–', s.mode || '–',
      s.members.join(', ')].map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join(''));
  }

  // Each service's methods: rate, errors and p99 summed over its instances, and the spread.
  function methodRows(byService) {
    const cell = (c) => `<td>${esc(c)}</td>`;
    return Object.entries(byService).map(([name, m]) => {
      const errs = m.errors.map((e) => `<tr data-service="${esc(name)}"><td>${esc(name)}</td><td colspan="5" class="err">${esc(e)}</td></tr>`);
      const rows = m.rows.slice(0, 50).map((r) => {
        const p99 = r.p99_ms === null ? '–' : r.p99_ms === 'inf' ? '> 10 s' : `≤ ${r.p99_ms} ms`;
        const spread = Object.entries(r.per_instance).map(([i, rps]) => `${i}: ${rps}`).join(' · ');
        return `<tr data-method="${esc(r.component + '.' + r.method)}">${[name, `${r.component}.${r.method}`, r.rps,
          `${(100 * r.error_rate).toFixed(1)}%`, p99, spread].map(cell).join('')}</tr>`;
      });
      return errs.concat(rows).join('');
    }).join('');
  }

  // Per callee component, each calling instance's view: picker, strategy, breakers, ejections.
  function callerRows(byService) {
    const rows = [];
    for (const [name, m] of Object.entries(byService)) {
      for (const [ident, list] of Object.entries(m.callers || {})) {
        for (const c of list) rows.push([c.callee, `${name} ${ident}`, c.picker || '–', c.strategy || '–',
          c.open_breakers.join(', ') || '–', c.ejected.join(', ') || '–', c.open_breakers.length || c.ejected.length]);
      }
    }
    rows.sort((a, b) => (a[0] + a[1]).localeCompare(b[0] + b[1]));
    return rows.slice(0, 100).map((r) => `<tr data-callee="${esc(r[0])}" data-caller="${esc(r[1])}" class="${r[6] ? 'bad' : ''}">` +
      r.slice(0, 6).map((c) => `<td>${esc(c)}</td>`).join('') + '</tr>').join('');
  }

  // Each gateway: its traffic over the last second, and where requests may go now.
  function drawGateways(view) {
    const gws = view.gateways || [];
    $('#gateway-panel').hidden = !gws.length;
    const html = gws.map((g) => {
      if (!g.up) return `<div class="gw" data-gateway="${esc(g.admin)}"><h3>${esc(g.admin)}</h3><p class="err">${esc(g.error)}</p></div>`;
      const s = g.state, f = g.figures || {};
      const p99 = f.p99_ms === null || f.p99_ms === undefined ? '–' : f.p99_ms === 'inf' ? '> 10 s' : `≤ ${f.p99_ms} ms`;
      const rows = s.backends.map((b) => `<tr data-backend="${esc(b.id)}" class="${b.routable ? '' : 'bad'}">${[b.id, b.address,
        b.healthy ? 'healthy' : 'unhealthy', b.ejected ? 'EJECTED' : '–', b.breaker === 'open' ? 'OPEN' : b.breaker,
        b.inflight].map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('');
      return `<div class="gw" data-gateway="${esc(g.admin)}"><h3>${esc(s.service)} via ${esc(g.admin)} · picker ${esc(s.lb)}${s.panic ? ' · PANIC: every backend unhealthy' : ''}${s.stale ? ' · registry stale' : ''}</h3>` +
        `<p class="figures">${f.rps ?? '–'} requests/s · errors ${f.error_rate === undefined ? '–' : (100 * f.error_rate).toFixed(1) + '%'} · p99 ${p99} · retries ${f.retries_per_s ?? '–'}/s · ejections ${f.ejections ?? '–'}</p>` +
        `<table><thead><tr><th>backend</th><th>address</th><th>health</th><th>ejected</th><th>breaker</th><th>in flight</th></tr></thead><tbody>${rows}</tbody></table></div>`;
    }).join('');
    const box = $('#gateways');
    if (box.dataset.last !== html) { box.innerHTML = html; box.dataset.last = html; }
  }

  function fillRows(sel, html) {
    const body = $(sel);
    if (body.dataset.last !== html) { body.innerHTML = html; body.dataset.last = html; }
  }

  // Each node reports the high watermarks of the partitions it hosts: the highest is the
  // leader's, and a consumer's lag is measured against it.
  // Transactions recently aborted, as the group leaders that refused them saw them; newest first.
  function drawAborts(nodes) {
    const seen = new Map();
    for (const v of nodes.values()) {
      for (const a of ((v && v.st && v.st.txn_aborts) || [])) seen.set(`${a.txn}/${a.group}/${a.at}`, a);
    }
    const list = [...seen.values()].sort((a, b) => b.at - a.at).slice(0, 20);
    $('#aborts-panel').hidden = !list.length;
    const why = (a) => a.reasons.length ? a.reasons.map((r) => `${r.reason} ${r.key}${r.holder ? ' (held by ' + r.holder.slice(0, 12) + ')' : ''}`).join('; ') : '–';
    fillRows('#aborts tbody', list.map((a) => `<tr data-txn="${esc(a.txn)}">${[new Date(a.at * 1000).toLocaleTimeString(),
      a.txn.slice(0, 16), a.group, a.what, why(a)].map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join(''));
  }

  function drawEventLog(nodes) {
    const parts = new Map(), committed = new Map();
    for (const v of nodes.values()) {
      const log = v && v.st && v.st.event_log;
      if (!log) continue;
      for (const [topic, list] of Object.entries(log.topics)) {
        for (const p of list) {
          const key = topic + '\u0000' + p.partition, was = parts.get(key);
          if (!was || (p.high_watermark ?? -1) > (was.high_watermark ?? -1)) parts.set(key, { topic, ...p });
        }
      }
      for (const [group, list] of Object.entries(log.consumer_groups)) {
        for (const c of list) {
          const key = [group, c.topic, c.partition].join('\u0000'), was = committed.get(key);
          if (!was || c.committed > was.committed) committed.set(key, { group, ...c });
        }
      }
    }
    $('#log-panel').hidden = !parts.size;
    if (!parts.size) return;
    const pRows = [...parts.values()].slice(0, 500).map((p) => [p.topic, p.partition, p.group,
      p.leader ? 'n' + p.leader : '–', p.high_watermark ?? '–']);
    const cRows = [...committed.values()].slice(0, 500).map((c) => {
      const hw = (parts.get(c.topic + '\u0000' + c.partition) || {}).high_watermark;
      return [c.group, c.topic, c.partition, c.committed, hw === undefined || hw === null ? '–' : Math.max(0, hw - c.committed)];
    });
    for (const [sel, rows] of [['#partitions', pRows], ['#consumers', cRows]]) {
      fillRows(sel + ' tbody', rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join(''));
    }
  }

  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  // ------------------------------------------------------------------ the fault panel
  function fill(select, ids) {
    const want = ids.join(',');
    if (select.dataset.ids === want) return;
    const keep = select.value;
    select.dataset.ids = want;
    select.innerHTML = '';
    for (const id of ids) select.append(Object.assign(el('option', '', 'n' + id), { value: String(id) }));
    if (ids.map(String).includes(keep)) select.value = keep;
  }

  function drawFaultPanel(nodes, view) {
    const faulty = [...nodes.entries()].filter(([, v]) => v && v.st && v.st.allow_faults && v.n.faults_url);
    const panel = $('#fault-panel');
    panel.hidden = !faulty.length || !state.token;
    if (panel.hidden) return;
    fill($('#fault-a'), faulty.map(([id]) => id));
    const a = +$('#fault-a').value;
    fill($('#fault-b'), [...nodes.keys()].filter((id) => id !== a));
    const procs = [...nodes.entries()].filter(([, v]) => v && v.n.process_url);
    $('#process-row').hidden = !view.process_control || !procs.length;
    fill($('#proc-node'), procs.map(([id]) => id));
  }

  async function post(url, body) {
    const r = await fetch(url, { method: 'POST', headers: { ...headers(), 'Content-Type': 'application/json' },
                                 body: JSON.stringify(body) });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error || `${url} answered ${r.status}`);
    return answer;
  }

  function say(text, bad) {
    const m = $('#fault-msg');
    m.classList.toggle('bad', !!bad);
    setText(m, text);
  }

  function entryOf(id) {
    const v = state.view && nodesById(state.view).get(id);
    return v && v.st ? v : null;
  }

  // Cutting a link is one node refusing the other both ways, which silences it entirely.
  async function changeLink(cut) {
    const a = +$('#fault-a').value, b = +$('#fault-b').value;
    const sides = cut ? [[a, b]] : [[a, b], [b, a]];
    try {
      for (const [x, y] of sides) {
        const v = entryOf(x);
        if (!v || !v.st.allow_faults) continue;
        const f = v.st.faults;
        const edit = (list) => (cut ? [...new Set([...list, y])] : list.filter((p) => p !== y));
        await post(v.n.faults_url, { block_to: edit(f.block_to), block_from: edit(f.block_from) });
      }
      say(`${cut ? 'cut' : 'healed'} the link n${a}–n${b}`);
    } catch (e) { say(e.message, true); }
  }

  $('#cut-link').addEventListener('click', () => changeLink(true));
  $('#heal-link').addEventListener('click', () => changeLink(false));
  $('#fault-a').addEventListener('change', () => draw());
  $('#group-filter').addEventListener('input', () => draw());
  $('#heal-all').addEventListener('click', async () => {
    try {
      for (const v of nodesById(state.view).values()) {
        if (v && v.st && v.st.allow_faults && v.n.faults_url) await post(v.n.faults_url, { heal: true });
      }
      say('healed every node that answers');
    } catch (e) { say(e.message, true); }
  });
  for (const b of document.querySelectorAll('#process-row button')) {
    b.addEventListener('click', async () => {
      const v = nodesById(state.view).get(+$('#proc-node').value);
      try { say((await post(v.n.process_url, { op: b.dataset.op })).message); } catch (e) { say(e.message, true); }
    });
  }

  // ------------------------------------------------------------------ the timeline of events
  function addEvent(e) {
    const list = $('#events');
    const li = el('li');
    li.dataset.kind = e.kind;
    li.append(el('time', '', clock(e.t)), el('span', 'k k-' + e.kind, e.kind), e.text);
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  connect();
})();
