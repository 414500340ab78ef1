"use strict";
// The view is the daemon's own (/v1/snapshot); the SSE stream says when it
// changed (and feeds the tail). EventSource reconnects by itself with
// Last-Event-ID, so nothing is missed while the page is open.
const KINDS = ["session.register", "session.heartbeat", "session.dereg", "session.state", "session.probe_error",
  "session.report", "lock.acquire", "lock.wait", "lock.wait_cancel", "lock.release", "lock.delegate",
  "inbox.deliver", "inbox.ack", "dispatch.issue", "dispatch.ack", "dispatch.complete",
  "dispatch.cancel", "dispatch.reassign", "dispatch.orphan", "approval.request", "approval.decide"];
const GLYPH = {starting:"+", active:"●", idle:"○", needs_input:"!", stale:"?", dead:"✗"};
const $ = (id) => document.getElementById(id);
// Who this login is (GET /v1/ui/me): an approver gets allow/deny buttons
// and sends its CSRF secret with each decision (PROTOCOL §13, §14).
let me = {role: "viewer"};
let view = null, head = 0, snapSeq = 0, tail = [], refreshing = false, again = false, lost = null;

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s"; if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h"; return Math.floor(s / 86400) + "d";
}
function td(text, cls) { const c = document.createElement("td"); c.textContent = text; if (cls) c.className = cls; return c; }
function rows(tbody, list) { tbody.replaceChildren(...list); }

function render() {
  if (!view) return;
  const now = Date.now();
  const sessions = Object.values(view.sessions);
  const rank = (s) => s.state === "needs_input" ? 0 : s.state === "stale" ? 1 : 2;
  sessions.sort((a, b) => rank(a) - rank(b) || a.session_id.localeCompare(b.session_id));
  const held = {};
  for (const l of Object.values(view.locks)) for (const h of l.holders) held[h.session_id] = (held[h.session_id] || 0) + 1;
  rows($("sessions"), sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.dataset.session = s.session_id;
    tr.dataset.state = s.state;
    if (s.state === "needs_input") tr.className = "needs";
    const at = Date.parse(s.state_since || s.registered_at);
    // Waiting for a human: what for (the reason without its evidence),
    // where the phase would be; the whole reason on hover.
    const reason = s.state_reason || "";
    const cut = reason.indexOf(": ");
    const phase = s.state === "needs_input" && reason ? td(cut >= 0 ? reason.slice(cut + 2) : reason, "waits") : td(s.phase);
    if (reason) phase.title = reason;
    tr.append(td(GLYPH[s.state] + " " + s.state, "state s-" + s.state), td(s.session_id), td(s.role), td(s.task),
              phase, td(age(now - at)), td(String(held[s.session_id] || 0)),
              td(String((view.inboxes[s.session_id] || []).length)));
    return tr;
  }));
  const pending = Object.values(view.approvals || {}).sort((a, b) => a.requested_seq - b.requested_seq);
  rows($("approvals"), pending.map((a) => {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.dataset.approval = a.approval_id;
    tr.className = "needs";
    const act = document.createElement("td");
    if (me.role === "approver" || me.role === "admin") {
      for (const [verdict, label] of [["allow", "Allow"], ["deny", "Deny"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.className = "decide " + verdict;
        b.addEventListener("click", () => decide(a.approval_id, verdict));
        act.append(b);
      }
    } else {
      act.textContent = "view only";
      act.className = "dim";
    }
    tr.append(td(a.approval_id), td(a.session_id), td(a.summary), td(age(now - Date.parse(a.requested_at))), act);
    return tr;
  }));
  rows($("locks"), Object.values(view.locks).map((l) => {
    const tr = document.createElement("tr");
    tr.append(td(l.resource), td(l.mode), td(l.holders.map((h) => h.session_id + " (" + h.acquired_seq + ")").join(", ") || "-"),
              td(l.waiters.map((w) => w.session_id + " (" + age(now - Date.parse(w.since_at)) + ")").join(", ") || "-"));
    return tr;
  }));
  rows($("orders"), Object.values(view.orders).map((o) => {
    const tr = document.createElement("tr");
    tr.append(td(o.order_id), td(o.assignee), td(o.ticket), td(o.state));
    return tr;
  }));
  rows($("inboxes"), Object.entries(view.inboxes).filter(([, m]) => m.length).map(([sid, m]) => {
    const tr = document.createElement("tr");
    tr.append(td(sid), td(String(m.length)), td(age(now - Date.parse(m[0].sent_at))));
    return tr;
  }));
  $("summary").textContent = "seq " + head + " · " + sessions.length + " sessions · " +
    Object.keys(view.locks).length + " locks · " + Object.keys(view.orders).length + " orders";
  const f = $("filter").value.trim();
  const re = f ? new RegExp("^" + f.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*") + "$") : null;
  $("events").textContent = tail.filter((e) => !f || re.test(e.tx_kind) || e.session_id === f || e.resource === f)
    .slice(-200).map((e) => String(e.seq).padStart(6) + " " + e.ts.slice(11, 19) + " " + e.tx_kind.padEnd(18) + " " +
      (e.session_id || "") + (e.resource ? " " + e.resource : "")).join("\n");
}

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const r = await fetch("/v1/snapshot", {credentials: "same-origin"});
    if (r.ok) { const s = await r.json(); view = s.view; snapSeq = s.seq; head = Math.max(head, s.seq); render(); }
  } finally {
    refreshing = false;
    if (again) { again = false; refresh(); }
  }
}

async function decide(id, verdict) {
  const body = {decision: verdict};
  if (verdict === "deny") {
    const why = window.prompt("Why? (the agent's model reads it)", "");
    if (why === null) return;
    body.reason = why;
  }
  const r = await fetch("/v1/approvals/" + encodeURIComponent(id) + "/decide", {
    method: "POST", credentials: "same-origin",
    headers: {"content-type": "application/json", "coord-csrf": me.csrf || ""},
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    const e = await r.json().catch(() => ({}));
    $("banner").textContent = "Not decided: " + ((e.error && e.error.message) || r.status);
    $("banner").className = "on";
  }
  refresh();
}

function notify(e) {
  if (e.tx_kind !== "session.state" || !e.payload || e.payload.to !== "needs_input") return;
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification("coord: " + e.session_id + " needs input", {body: e.payload.reason || ""});
  }
}

function connect() {
  // Start a little before the snapshot, so the tail shows recent history.
  const es = new EventSource("/v1/events?since=" + Math.max(0, head - 200));
  es.onopen = () => { lost = null; $("banner").className = ""; };
  // The stream names each SSE event by its kind: listen to coord's own.
  const onEvent = (m) => {
    const e = JSON.parse(m.data);
    head = Math.max(head, e.seq);
    tail.push(e); if (tail.length > 1000) tail.shift();
    if (e.seq <= snapSeq) { render(); return; }
    notify(e);
    refresh();
  };
  for (const k of KINDS) es.addEventListener(k, onEvent);
  es.onmessage = onEvent;
  es.onerror = () => {
    lost = lost || Date.now();
    $("banner").textContent = "Disconnected from the daemon " + age(Date.now() - lost) + " ago; reconnecting…";
    $("banner").className = "on";
  };
}

$("notify").addEventListener("click", () => { if ("Notification" in window) Notification.requestPermission(); });
$("filter").addEventListener("input", render);
fetch("/v1/ui/me", {credentials: "same-origin"}).then((r) => r.ok ? r.json() : {role: "viewer"})
  .then((m) => { me = m; $("role").textContent = "(" + (m.name ? m.name + ", " : "") + m.role + ")"; render(); })
  .catch(() => {});
refresh().then(connect);
setInterval(render, 1000);
