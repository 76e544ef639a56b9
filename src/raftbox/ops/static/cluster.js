// The cluster view (raftbox.ops.web serves it; raftbox.ops.cluster answers its feed).
// One loop: ask /admin/cluster/status (a long-poll that answers at once when this member
// records a Raft event, else within a couple of seconds) with the last event seq we hold per
// member, merge the new events, draw everything again. Every name and value goes in as text.
"use strict";

const WAIT_S = 2;
const EVENTS_MAX = 3000;
const events = new Map(); // "member:seq" -> event
const since = {}; // member id -> last seq we hold
let last = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) tr.append(el("td", c));
  return tr;
}

function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [row([empty, ...Array(cols - 1).fill("")])]));
}

function rate(r) {
  if (!r) return "";
  const parts = Object.entries(r).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "0";
}

function ids(list) {
  return list && list.length ? list.join(", ") : "none";
}

// -- members -------------------------------------------------------------------------------
function drawMembers(st) {
  const rows = st.members.map((m) => {
    const role = m.reachable ? m.role : "unreachable";
    const tr = row(
      [
        `member ${m.id}`,
        m.id === st.leader && m.reachable ? "leader" : role,
        m.term ?? "",
        m.commit ?? "",
        m.applied ?? "",
        m.lag === null || m.lag === undefined ? "" : m.lag,
        rate(m.requests_per_s),
        m.url || "",
      ],
      m.id === st.leader && m.reachable ? "leader" : m.reachable ? "" : "down",
    );
    tr.dataset.member = m.id;
    return tr;
  });
  fill(document.querySelector("#members tbody"), rows, "no members", 8);
  const lead = st.members.find((m) => m.id === st.leader);
  document.getElementById("summary").textContent = st.leader
    ? `Leader: member ${st.leader} (term ${lead ? lead.term : "?"}) · served by member ${st.served_by}`
    : `No leader right now · served by member ${st.served_by}`;
}

// -- elections -----------------------------------------------------------------------------
const ELECTION_KINDS = new Set(["timeout", "campaign", "vote", "granted", "term", "leader", "stepped_down"]);

function electionTerm(e) {
  // A pre-candidate does not bump its term: its timeout belongs to the election of term+1.
  if (e.kind === "timeout" && e.pre_vote) return e.term + 1;
  if (e.kind === "stepped_down") return e.term + 1;
  return e.term;
}

function describe(e) {
  const who = `Member ${e.member}`;
  switch (e.kind) {
    case "timeout":
      return `${who}: election timeout fired after ${e.elapsed_ms} ms without a leader ` +
        `(its randomized timeout was ${e.drawn_ms} ms)`;
    case "campaign":
      return e.pre_vote
        ? `${who} asked members ${ids(e.asked)} for pre-votes (would it win term ${e.term}?)`
        : `${who} became candidate for term ${e.term} and asked members ${ids(e.asked)} for votes`;
    case "vote":
      return `${who} ${e.granted ? "got" : "was refused"} a ${e.pre_vote ? "pre-vote" : "vote"} ` +
        `${e.granted ? "from" : "by"} member ${e.frm}`;
    case "granted":
      return `${who} gave its ${e.pre_vote ? "pre-vote" : "vote"} to member ${e.to}`;
    case "term":
      return `${who} moved to term ${e.term} (was ${e.was})`;
    case "stepped_down":
      return `${who} stepped down as leader of term ${e.term}`;
    case "leader":
      if (e.won) {
        const gap = e.leaderless_ms === null ? "" : ` — the cluster had no leader for ${e.leaderless_ms} ms`;
        return `${who} won term ${e.term} with votes from members ${ids(e.votes_from)}${gap}`;
      }
      return `${who} follows member ${e.leader} in term ${e.term}`;
    default:
      return `${who}: ${e.kind}`;
  }
}

function drawElections(all) {
  const byTerm = new Map();
  for (const e of all) {
    if (!ELECTION_KINDS.has(e.kind)) continue;
    const t = electionTerm(e);
    if (!byTerm.has(t)) byTerm.set(t, []);
    byTerm.get(t).push(e);
  }
  const items = [];
  for (const t of [...byTerm.keys()].sort((a, b) => b - a)) {
    const evs = byTerm.get(t);
    const winner = evs.find((e) => e.kind === "leader" && e.won);
    const li = el("li", null, winner ? "won" : "");
    li.dataset.term = t;
    const voted = evs.some((e) => (e.kind === "campaign" && !e.pre_vote) || e.kind === "term");
    const title = winner
      ? `Term ${t}: member ${winner.member} leads`
      : voted
        ? `Term ${t}: no leader yet`
        : `Term ${t}: pre-votes only — no majority, so no new term and the leader stays`;
    li.append(el("h3", title));
    const ul = el("ul");
    for (const e of evs) {
      const at = new Date(e.at_ms).toLocaleTimeString();
      ul.append(el("li", `${at} · ${describe(e)}`));
    }
    li.append(ul);
    items.push(li);
  }
  const ol = document.getElementById("elections");
  ol.replaceChildren(...(items.length ? items : [el("li", "No election recorded yet.")]));
}

// -- replication ---------------------------------------------------------------------------
function drawReplication(all) {
  const samples = new Map();
  for (const e of all) {
    if (e.kind !== "replicate") continue;
    const key = `${e.member}:${e.index}`;
    if (!samples.has(key)) samples.set(key, []);
    samples.get(key).push(e);
  }
  const items = [...samples.values()].slice(-6).reverse().map((evs) => {
    const first = evs[0];
    const done = evs.find((e) => e.phase === "committed");
    const li = el("li", null, done ? "won" : "");
    li.append(el("h3", `Entry ${first.index} (term ${first.term}) from leader ${first.member}`));
    const ul = el("ul");
    for (const e of evs) {
      if (e.phase === "appended") {
        ul.append(el("li", `appended to the leader's log; a majority is ${e.quorum} members`));
      } else if (e.phase === "acked") {
        const maj = e.acks.length >= e.quorum ? " — a majority has it" : "";
        ul.append(el("li", `+${e.ms} ms: on disk at member ${e.frm} ` +
          `(${e.acks.length} of ${e.quorum} needed)${maj}`));
      } else if (e.phase === "committed") {
        ul.append(el("li", `+${e.ms} ms: committed (acknowledged by members ${ids(e.acks)})`));
      }
    }
    li.append(ul);
    return li;
  });
  const ol = document.getElementById("replication");
  ol.replaceChildren(...(items.length ? items : [el("li", "No sampled entry yet: write something.")]));
}

// -- notify and blockservers -----------------------------------------------------------------
function drawProcesses(st) {
  const notify = [];
  for (const m of st.members) {
    if (m.reachable && m.notify) {
      notify.push(row([`member ${m.id} (meta)`, "root", "up", m.notify.connections ?? "",
        m.notify.waiting ?? 0, m.notify.streams ?? 0]));
    }
  }
  const blocks = [];
  for (const p of st.processes) {
    const s = p.status || {};
    const cls = p.state === "up" ? "" : "down";
    if (p.kind === "blockserver") {
      blocks.push(row([p.url, p.state, s.connections ?? "", rate(s.requests_per_s)], cls));
    } else {
      const kind = p.kind === "notify_root" ? "root" : "leaf";
      notify.push(row([p.url, kind, p.state, s.connections ?? "", s.waiting ?? 0, s.streams ?? 0], cls));
    }
  }
  fill(document.querySelector("#notify tbody"), notify, "no notify process", 6);
  fill(document.querySelector("#blockservers tbody"), blocks, "none (meta members serve blocks)", 4);
}

// -- the loop ------------------------------------------------------------------------------
function merge(st) {
  for (const e of st.events) events.set(`${e.member}:${e.seq}`, e);
  for (const [m, seq] of Object.entries(st.seqs)) {
    // A member that restarted counts from 1 again: start over for it.
    if (since[m] !== undefined && seq < since[m]) {
      for (const k of [...events.keys()]) if (k.startsWith(`${m}:`)) events.delete(k);
    }
    since[m] = seq;
  }
  if (events.size > EVENTS_MAX) {
    const keep = sortedEvents().slice(-EVENTS_MAX);
    events.clear();
    for (const e of keep) events.set(`${e.member}:${e.seq}`, e);
  }
}

function sortedEvents() {
  return [...events.values()].sort((a, b) => a.at_ms - b.at_ms || a.member - b.member || a.seq - b.seq);
}

function draw(st) {
  drawMembers(st);
  const all = sortedEvents();
  drawElections(all);
  drawReplication(all);
  drawProcesses(st);
}

async function loop() {
  const state = document.getElementById("feed-state");
  for (;;) {
    const q = Object.entries(since).map(([m, s]) => `${m}:${s}`).join(",");
    const wait = last === null ? 0 : WAIT_S;
    try {
      const r = await fetch(`/admin/cluster/status?wait_s=${wait}&since=${encodeURIComponent(q)}`, {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      last = await r.json();
      merge(last);
      draw(last);
      state.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      state.className = "muted";
    } catch (err) {
      state.textContent = `reconnecting (${err.message})…`;
      state.className = "down";
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

loop();
