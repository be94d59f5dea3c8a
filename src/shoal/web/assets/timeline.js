// Replays one simulated run (shoal sim --timeline). The record is embedded in the page; every
// instant is drawn from it by binary search, so the slider can jump anywhere in a long run.
// "Step" moves to the next instant at which anything happened (a node changed, a message was
// sent or arrived, a link was cut or healed, the world logged something).
(() => {
  'use strict';
  const rec = JSON.parse(document.getElementById('record').textContent);
  const $ = (s) => document.querySelector(s);
  const LOG_CELLS = 30, MAX_DOTS = 400, LOST_SHOW_US = 3000;

  // ------------------------------------------------------------------ indexes over the record
  const F = { t: 0, node: 1, state: 2, role: 3, term: 4, leader: 5, commit: 6, applied: 7, last: 8 };
  const framesOf = new Map(rec.nodes.map((n) => [n, []]));
  for (const f of rec.frames) framesOf.get(f[F.node]).push(f);
  const sent = rec.messages.map((m) => m[0]);
  const arrivals = rec.messages.map((m, k) => [m[1], k]).filter((a) => a[0] >= 0).sort((a, b) => a[0] - b[0]);
  const frameTimes = rec.frames.map((f) => f[0]);
  let maxLatency = LOST_SHOW_US;
  for (const m of rec.messages) if (m[1] >= 0) maxLatency = Math.max(maxLatency, m[1] - m[0]);
  const times = (() => {
    const all = [0, rec.end];
    for (const f of rec.frames) all.push(f[0]);
    for (const m of rec.messages) { all.push(m[0]); if (m[1] >= 0) all.push(m[1]); }
    for (const c of rec.cuts) all.push(c[0]);
    for (const n of rec.notes) all.push(n[0]);
    const sorted = Float64Array.from(all).sort();
    return sorted.filter((t, i) => i === 0 || t !== sorted[i - 1]);
  })();

  // The last row whose time is <= t (rows sorted by time in column `col`); -1 if none.
  function lastAtOrBefore(rows, t, col = 0) {
    let lo = 0, hi = rows.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = col === null ? rows[mid] : rows[mid][col];
      if (v <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found;
  }

  // ------------------------------------------------------------------ the static parts
  const fmt = (us) => (us / 1e6).toFixed(6) + ' s';
  $('#title').textContent = `seed ${rec.seed} · ${rec.config.engine}, ${rec.nodes.length} nodes, ${rec.config.steps} steps`;
  const v = $('#verdict');
  v.dataset.ok = String(!rec.violation);
  v.textContent = rec.violation ? 'violation' : 'safe' + (rec.verdict ? ` (history ${rec.verdict})` : '');
  $('#run').textContent = `replay: ${rec.replay} · ${rec.committed} entries committed, ${rec.ops} client operations, ` +
    Object.entries(rec.stats).map(([k, n]) => `${n} ${k}`).join(', ') +
    (rec.truncated.length ? ` · recording truncated: ${rec.truncated.join(', ')}` : '');
  const slider = $('#slider');
  slider.max = String(times.length - 1);
  if (rec.violation) {
    $('#violation').hidden = false;
    $('#violation-text').textContent = `Violation at ${fmt(rec.violation.t)}: ${rec.violation.text}`;
    const mark = document.createElement('span');
    mark.style.left = (100 * lastAtOrBefore(times, rec.violation.t, null) / Math.max(1, times.length - 1)) + '%';
    mark.title = rec.violation.text;
    $('#marks').append(mark);
    $('#to-violation').addEventListener('click', () => go(lastAtOrBefore(times, rec.violation.t, null)));
  }
  const pos = new Map(rec.nodes.map((n, i) => {
    const a = (2 * Math.PI * i) / rec.nodes.length - Math.PI / 2;
    return [n, [130 * Math.cos(a), 130 * Math.sin(a)]];
  }));
  // The nodes the violation names ("node 3", "n3"), ringed in red from its instant on.
  const culprits = new Set(rec.violation
    ? [...rec.violation.text.matchAll(/\bn(?:ode )?(\d+)\b/g)].map((m) => +m[1]).filter((n) => pos.has(n)) : []);
  const notes = $('#notes');
  for (const [t, text] of rec.notes) {
    const li = document.createElement('li');
    li.dataset.t = String(t);
    li.textContent = `${fmt(t)}  ${text}`;
    notes.append(li);
  }
  if (rec.violation) {
    const li = document.createElement('li');
    li.dataset.t = String(rec.violation.t);
    li.className = 'bad';
    li.textContent = `${fmt(rec.violation.t)}  VIOLATION: ${rec.violation.text}`;
    notes.append(li);
  }

  // ------------------------------------------------------------------ drawing one instant
  let index = 0;
  const noteTimes = [...notes.children].map((li) => +li.dataset.t); // in time order
  let notesShown = noteTimes.length;

  function nodeAt(n, t) {
    const rows = framesOf.get(n);
    const i = lastAtOrBefore(rows, t);
    return i >= 0 ? rows[i] : null;
  }

  function draw() {
    const t = times[index];
    slider.value = String(index);
    $('#now').textContent = `t = ${fmt(t)} · instant ${index + 1} of ${times.length}`;
    const parts = [];
    const ci = lastAtOrBefore(rec.cuts, t);
    const cut = new Set(ci >= 0 ? rec.cuts[ci][1].map(([a, b]) => a + '-' + b) : []);
    const ids = rec.nodes;
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const a = ids[i], b = ids[j];
        const isCut = cut.has(a + '-' + b) || cut.has(b + '-' + a);
        const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
        parts.push(`<line data-link="${a}-${b}" class="${isCut ? 'cut' : ''}" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}"></line>`);
      }
    }
    // Messages in flight: sent by t, not yet delivered (or lost: shown briefly, in red).
    let dots = 0;
    const hi = lastAtOrBefore(sent, t, null);
    for (let k = hi; k >= 0 && dots < MAX_DOTS; k--) {
      const m = rec.messages[k];
      if (m[0] < t - maxLatency) break;
      const lost = m[1] < 0;
      const end = lost ? m[0] + LOST_SHOW_US : m[1];
      if (t >= end) continue;
      const f = lost ? 0.5 * (t - m[0]) / LOST_SHOW_US : (t - m[0]) / Math.max(1, m[1] - m[0]);
      const [x1, y1] = pos.get(m[2]), [x2, y2] = pos.get(m[3]);
      const cls = 'msg' + (lost ? ' lost' : m[6] ? ' append' : '');
      parts.push(`<circle class="${cls}" cx="${(x1 + (x2 - x1) * f).toFixed(1)}" cy="${(y1 + (y2 - y1) * f).toFixed(1)}" r="${m[6] ? 5 : 3.5}"><title>n${m[2]}→n${m[3]} ${m[4]} term ${m[5]}${m[6] ? `, ${m[6]} entries` : ''}${m[7] ? ', reject' : ''}${lost ? ' (lost)' : ''}</title></circle>`);
      dots++;
    }
    const logs = [];
    const top = Math.max(1, ...ids.map((n) => (nodeAt(n, t) || [])[F.last] || 0));
    for (const n of ids) {
      const f = nodeAt(n, t);
      const [x, y] = pos.get(n);
      const state = f ? f[F.state] : 'up';
      const role = state === 'up' ? (f ? f[F.role] : 'follower') : state;
      const ringed = culprits.has(n) && t >= rec.violation.t ? ' culprit' : '';
      parts.push(`<circle class="node ${role}${ringed}" data-node="${n}" cx="${x}" cy="${y}" r="24"><title>n${n} ${role}</title></circle>` +
        `<text x="${x}" y="${y - 5}">n${n}</text><text x="${x}" y="${y + 8}" style="font-size:9px">t${f ? f[F.term] : 0}</text>`);
      if (!f) continue;
      const [,,, r, term, leader, commit, applied, last] = f;
      const first = Math.max(1, top - LOG_CELLS + 1);
      let cells = '';
      for (let i = first; i <= top; i++) cells += i <= last ? `<i class="${i <= commit ? 'c' : ''}" title="index ${i}"></i>` : '';
      logs.push(`<div class="log ${state === 'up' ? '' : 'off'}" data-node="${n}"><b>n${n}</b><span class="cells">${cells}</span>` +
        `<span>${state === 'up' ? r : state} · term ${term} · leader ${leader ? 'n' + leader : '–'} · commit ${commit} · applied ${applied} · last ${last}</span></div>`);
    }
    $('#stage').innerHTML = parts.join('');
    $('#logs').innerHTML = logs.join('');
    drawInstant(t);
    // The notes up to t are shown: only those between the old and the new count change.
    const upTo = lastAtOrBefore(noteTimes, t, null) + 1;
    for (let k = Math.min(upTo, notesShown); k < Math.max(upTo, notesShown); k++) {
      notes.children[k].classList.toggle('future', k >= upTo);
    }
    notesShown = upTo;
    if (upTo) notes.children[upTo - 1].scrollIntoView({ block: 'nearest' });
  }

  // What happened exactly at t: what "Step" just showed (at most a screenful of it).
  function drawInstant(t) {
    const lines = [];
    const describe = (m) => `n${m[2]}→n${m[3]} ${m[4]} term ${m[5]}${m[6] ? `, ${m[6]} entries` : ''}${m[7] ? ', reject' : ''}`;
    for (let k = lastAtOrBefore(frameTimes, t, null); k >= 0 && frameTimes[k] === t; k--) {
      const f = rec.frames[k];
      lines.push(`n${f[F.node]} now ${f[F.state] === 'up' ? f[F.role] : f[F.state]}, term ${f[F.term]}, commit ${f[F.commit]}, applied ${f[F.applied]}, last ${f[F.last]}`);
    }
    for (let k = lastAtOrBefore(sent, t, null); k >= 0 && sent[k] === t; k--) {
      const m = rec.messages[k];
      lines.push(`sent ${describe(m)}${m[1] < 0 ? ' (never delivered: lost, cut off, or the run ended first)' : ''}`);
    }
    for (let k = lastAtOrBefore(arrivals, t); k >= 0 && arrivals[k][0] === t; k--) {
      lines.push(`delivered ${describe(rec.messages[arrivals[k][1]])}`);
    }
    for (let k = lastAtOrBefore(rec.notes, t); k >= 0 && rec.notes[k][0] === t; k--) lines.push(rec.notes[k][1]);
    if (rec.violation && rec.violation.t === t) lines.unshift('VIOLATION: ' + rec.violation.text);
    const ul = $('#instant');
    ul.innerHTML = '';
    for (const l of lines.slice(0, 12)) ul.append(Object.assign(document.createElement('li'), { textContent: l }));
    if (lines.length > 12) ul.append(Object.assign(document.createElement('li'), { textContent: `… and ${lines.length - 12} more` }));
  }

  // ------------------------------------------------------------------ controls
  let playing = null;
  function go(i) {
    index = Math.max(0, Math.min(times.length - 1, i));
    draw();
  }
  function pause() {
    if (playing !== null) cancelAnimationFrame(playing);
    playing = null;
    $('#play').textContent = '▶ Play';
  }
  function play() {
    let last = performance.now();
    let virtual = times[index];
    const frame = (now) => {
      virtual += (now - last) * 1000 * +$('#speed').value; // ms of wall time → µs of run
      last = now;
      while (index < times.length - 1 && times[index + 1] <= virtual) index++;
      draw();
      if (index >= times.length - 1) { pause(); return; }
      playing = requestAnimationFrame(frame);
    };
    $('#play').textContent = '❚❚ Pause';
    playing = requestAnimationFrame(frame);
  }
  $('#play').addEventListener('click', () => (playing === null ? play() : pause()));
  $('#step').addEventListener('click', () => { pause(); go(index + 1); });
  $('#back').addEventListener('click', () => { pause(); go(index - 1); });
  slider.addEventListener('input', () => { pause(); go(+slider.value); });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowRight') { pause(); go(index + 1); }
    if (e.key === 'ArrowLeft') { pause(); go(index - 1); }
    if (e.key === ' ') { e.preventDefault(); playing === null ? play() : pause(); }
  });
  draw();
})();
