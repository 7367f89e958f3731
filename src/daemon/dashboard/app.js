/* The dashboard at /admin/backup: talks only to the API of the daemon that serves it. The
 * token is kept in sessionStorage (this tab only) and sent as a header, never a cookie. */
"use strict";

const KEY = "caris-backup-token";
const DEFAULT_ALERT_AFTER_S = 26 * 3600; /* BACKUP_ALERT_AFTER's default */
const CLOCK_SKEW_MS = 15 * 60 * 1000; /* CARIS_CLOCK_SKEW_NS */
let pollTimer = null;
let lastRunning = null;
let backups = [];
let listed = false; /* backups holds the repository's list (read once at least) */
/* Until when this address must wait (a 429's Retry-After, ms since the epoch): the polls
 * pause, and the tab stays signed in. The wait is for failed authentications from this
 * address, which may be another client's (behind a reverse proxy every user shares one). */
let waitUntil = 0;

const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(KEY); }

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ("HTTP " + status));
    this.status = status;
    this.hint = body && body.error && body.error.hint;
    this.retryAfter = 0; /* seconds, of a 429 */
  }
}

async function api(method, path, body) {
  // signed out (a request of a chain that began before): nothing is sent, since a request
  // without the token is a failed authentication, and five make the address wait (a reload
  // with a revoked token sent "Bearer null" twice more: two reloads, and the address waited)
  if (!token()) throw new ApiError(401, null);
  const headers = { "Authorization": "Bearer " + token() };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const err = new ApiError(r.status, data);
    if (r.status === 429) {
      const s = parseInt(r.headers.get("Retry-After") || "", 10);
      err.retryAfter = s > 0 ? s : 5;
      waitUntil = Math.max(waitUntil, Date.now() + err.retryAfter * 1000);
    }
    throw err;
  }
  if ($("action-msg").dataset.waiting) { /* the wait is over */
    delete $("action-msg").dataset.waiting;
    text($("action-msg"), "");
  }
  return data;
}

function human(n) {
  if (typeof n !== "number") return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}

function seconds(ms) { return typeof ms === "number" ? (ms / 1000).toFixed(1) + " s" : ""; }

function text(el, s) { el.textContent = s; return el; }

function cell(tr, s, cls) {
  const td = document.createElement("td");
  td.textContent = s;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function outcome(rec) {
  if (!rec) return "—";
  return (rec.ok ? "ok" : "FAILED") + " " + (rec.time || "").slice(0, 16).replace("T", " ");
}

function renderBackups() {
  const tb = $("backups").querySelector("tbody");
  tb.replaceChildren();
  for (const b of backups.slice().reverse()) {
    const tr = document.createElement("tr");
    const st = b.stats || {};
    cell(tr, b.id);
    cell(tr, b.kind || "");
    cell(tr, b.mode || "");
    cell(tr, (b.started || "").slice(0, 19).replace("T", " "));
    cell(tr, seconds(b.durationMs), "num");
    cell(tr, human(st.bytesRead), "num");
    cell(tr, human(st.bytesAdded), "num");
    cell(tr, b.status || "", b.status === "ok" ? "ok" : "bad");
    cell(tr, outcome(b.lastVerification), b.lastVerification && !b.lastVerification.ok ? "bad" : "");
    cell(tr, outcome(b.lastTestRestore), b.lastTestRestore && !b.lastTestRestore.ok ? "bad" : "");
    tb.appendChild(tr);
  }
  let total = 0;
  for (const b of backups) total += (b.stats && b.stats.bytesAdded) || 0;
  text($("repo-size"), backups.length + " backups; " + human(total) +
       " added to the repository by them (its growth)");
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const k in attrs) el.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(el);
  return el;
}

/* A chart of one or two series over the backups, oldest first: bars and/or a line. */
function chart(container, label, bars, line, fmt) {
  const W = 600, H = 220, L = 60, B = 20, T = 10;
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
  svgEl("title", {}, svg).textContent = label;
  const all = (bars || []).concat(line || []);
  const max = Math.max(1, ...all);
  const n = Math.max(1, all.length && (bars || line).length);
  const x = (i) => L + (W - L - 10) * (i + 0.5) / n;
  const y = (v) => H - B - (H - B - T) * v / max;
  svgEl("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#57606a" }, svg);
  svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#57606a" }, svg);
  const lab = svgEl("text", { x: L - 4, y: T + 10, "text-anchor": "end", "font-size": 11 }, svg);
  lab.textContent = fmt(max);
  const z = svgEl("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 11 }, svg);
  z.textContent = "0";
  if (bars) {
    const w = Math.max(2, (W - L - 10) / n * 0.6);
    bars.forEach((v, i) => {
      const r = svgEl("rect", { x: x(i) - w / 2, y: y(v), width: w, height: H - B - y(v),
                                fill: "#9cc3f5", class: "bar" }, svg);
      svgEl("title", {}, r).textContent = fmt(v);
    });
  }
  if (line && line.length) {
    svgEl("polyline", { points: line.map((v, i) => x(i) + "," + y(v)).join(" "),
                        fill: "none", stroke: "#0969da", "stroke-width": 2 }, svg);
    line.forEach((v, i) => {
      const c = svgEl("circle", { cx: x(i), cy: y(v), r: 3, fill: "#0969da", class: "point" }, svg);
      svgEl("title", {}, c).textContent = fmt(v);
    });
  }
  container.replaceChildren(svg);
}

function renderCharts() {
  const read = backups.map((b) => (b.stats && b.stats.bytesRead) || 0);
  const added = backups.map((b) => (b.stats && b.stats.bytesAdded) || 0);
  const dur = backups.map((b) => (b.durationMs || 0) / 1000);
  chart($("chart-size"), "Backup sizes: bytes read and bytes added, oldest first", read, added, human);
  chart($("chart-duration"), "Backup durations in seconds, oldest first", null, dur,
        (v) => v.toFixed(1) + " s");
}

function renderAlerts(status) {
  const box = $("alerts");
  box.replaceChildren();
  const after = (status && status.alertAfterSeconds) || DEFAULT_ALERT_AFTER_S;
  const now = Date.now();
  // the kinds the daemon's stale alert watches (configured, or with backups): a configured
  // kind without a single backup in the list is the loudest case, not a quiet one
  const watched = (status && status.alertKinds) || [];
  for (const kind of ["database", "files"]) {
    const ofKind = backups.filter((b) => b.kind === kind);
    if (!ofKind.length && (!listed || !watched.includes(kind))) continue;
    // a backup dated in the future (beyond the 15 minutes of clock skew the server allows)
    // proves no recent success: the clock is behind, or was ahead when it was made
    const future = ofKind.filter((b) => Date.parse(b.started) > now + CLOCK_SKEW_MS);
    for (const b of future) {
      const p = document.createElement("p");
      p.className = "banner";
      p.textContent = "Backup " + b.id + " is dated " + b.started + ", after the current time: " +
        "check the clock. `latest` is refused until it is sorted out.";
      box.appendChild(p);
    }
    const good = ofKind.filter((b) => b.status !== "damaged" && b.status !== "missing" &&
      !future.includes(b));
    const newest = good.length ? Date.parse(good[good.length - 1].started) : 0;
    if (!newest || (now - newest) / 1000 > after) {
      const p = document.createElement("p");
      p.className = "banner";
      p.textContent = !ofKind.length
        ? "No successful " + kind + " backup: the repository holds none."
        : "No successful " + kind + " backup for more than " +
          Math.round(after / 3600) + " hours" + (newest ? " (last: " +
          new Date(newest).toISOString().slice(0, 16).replace("T", " ") + " UTC)" : "") + ".";
      box.appendChild(p);
    }
  }
}

function renderStatus(s) {
  const next = $("next");
  next.replaceChildren();
  for (const r of s.nextRuns || []) {
    const li = document.createElement("li");
    li.textContent = r.schedule + " (" + r.type + "): " + r.time.slice(0, 16).replace("T", " ") + " UTC";
    next.appendChild(li);
  }
  if (!(s.nextRuns || []).length) next.appendChild(text(document.createElement("li"), "No schedule is on."));
  const job = $("job");
  job.replaceChildren();
  const j = s.runningJob;
  if (!j) {
    job.textContent = "None." + (s.queue ? " " + s.queue + " queued." : "");
  } else {
    const p = document.createElement("p");
    p.textContent = j.kind + " " + (j.type || "") + (j.backupId ? " of " + j.backupId : "") +
      " by " + j.actor + ", started " + (j.startedAt || "").slice(11, 19) + " UTC" +
      (j.progress ? ": " + j.progress.phase : "");
    job.appendChild(p);
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", "progress of the running job");
    if (j.progress && j.progress.total) {
      bar.max = j.progress.total;
      bar.value = Math.min(j.progress.done, j.progress.total);
    }
    job.appendChild(bar);
  }
  const hist = $("history");
  hist.replaceChildren();
  for (const h of (s.history || []).slice(0, 10)) {
    const li = document.createElement("li");
    // a run with warnings (a file it could not read) completed, but is not "ok" to keep quiet
    const warned = (h.steps || []).find(x => x.warning);
    const result = !h.ok ? "FAILED" + (h.error ? " (" + h.error.message + ")" : "")
      : h.warnings ? "ok, with WARNINGS" + (warned ? " (" + warned.step + ": " + warned.warning.message + ")" : "")
      : "ok";
    li.textContent = (h.startedAt || "").slice(0, 16).replace("T", " ") + " " + (h.schedule || "") +
      " " + (h.type || "") + ": " + result + " in " + seconds(h.durationMs);
    if (!h.ok) li.className = "bad";
    else if (h.warnings) li.className = "warn";
    hist.appendChild(li);
  }
  const notes = $("notifications");
  notes.replaceChildren();
  for (const n of (s.notifications || [])) {
    const li = document.createElement("li");
    li.textContent = (n.time || "").slice(0, 16).replace("T", " ") + " " + n.kind +
      (n.backupKind ? " (" + n.backupKind + ")" : "") + ": " +
      (n.delivered ? "sent" : "NOT delivered" + (n.error ? " (" + n.error + ")" : ""));
    if (!n.delivered) li.className = "bad";
    notes.appendChild(li);
  }
  if (!(s.notifications || []).length)
    notes.appendChild(text(document.createElement("li"), "None since the daemon's status began."));
  const running = j ? j.id : null;
  if (lastRunning && running !== lastRunning) refreshList();
  lastRunning = running;
}

async function refreshAudit() {
  try {
    const r = await api("GET", "/api/admin/backup/audit?limit=20");
    const tb = $("audit").querySelector("tbody");
    tb.replaceChildren();
    for (const l of (r.lines || []).slice().reverse()) {
      const tr = document.createElement("tr");
      cell(tr, (l.time || "").slice(0, 19).replace("T", " "));
      cell(tr, l.actor || "");
      cell(tr, l.source || "");
      cell(tr, l.operation || (l.unreadable ? "(unreadable line)" : ""));
      cell(tr, l.result || "", /^(ok|2\d\d)$/.test(l.result || "") ? "" : "bad");
      tb.appendChild(tr);
    }
  } catch (e) { handle(e); }
}

async function refreshList() {
  try {
    const l = await api("GET", "/api/admin/backup/list?includeFiles=true&includeStats=true");
    backups = l.backups || [];
    listed = true;
    renderBackups();
    renderCharts();
  } catch (e) { handle(e); }
  await refreshAudit();
}

let lastStatus = null;
async function poll() {
  if (Date.now() < waitUntil) return;
  try {
    lastStatus = await api("GET", "/api/admin/backup/status");
    renderStatus(lastStatus);
    renderAlerts(lastStatus);
  } catch (e) { handle(e); }
}

function handle(e) {
  if (e instanceof ApiError && e.status === 401) {
    if (token()) signOut(e.message); /* else signed out already: its message stays */
    return;
  }
  if (e instanceof ApiError && e.status === 429) {
    /* the token was not even looked at: stay signed in, and try again after the wait (a
     * 429 signed every tab out, and one mistyped token behind a proxy signed out everyone) */
    $("action-msg").dataset.waiting = "1";
    text($("action-msg"), "Waiting: " + e.message + ". This tab stays signed in and tries " +
         "again in " + e.retryAfter + " s.");
    return;
  }
  text($("action-msg"), "Error: " + e.message + (e.hint ? " — " + e.hint : ""));
}

async function watchJob(id, what) {
  text($("action-msg"), what + ": queued as " + id + ".");
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    if (Date.now() < waitUntil) continue; /* the job runs on: asked again after the wait */
    let j;
    try { j = await api("GET", "/api/admin/backup/jobs/" + encodeURIComponent(id)); }
    catch (e) {
      handle(e);
      if (e instanceof ApiError && e.status === 429) continue;
      return;
    }
    if (j.state === "done") {
      text($("action-msg"), what + " (" + id + "): " + (j.ok ? "done, ok" : "FAILED: " +
           (j.error ? j.error.message : "see the job")) + ".");
      $("action-msg").dataset.done = id;
      await refreshList();
      await poll();
      return;
    }
    text($("action-msg"), what + " (" + id + "): " + j.state +
         (j.progress ? " — " + j.progress.phase : "") + "…");
  }
}

async function act(kind) {
  const latest = (k) => { const l = backups.filter((b) => !k || b.kind === k); return l.length ? l[l.length - 1] : null; };
  try {
    let r, what;
    if (kind === "full" || kind === "incremental") {
      what = kind + " backup";
      r = await api("POST", "/api/admin/backup/create", { type: kind, includeFiles: true });
    } else if (kind === "verify") {
      const b = latest(null);
      if (!b) { text($("action-msg"), "No backup to verify."); return; }
      what = "verification of " + b.id;
      r = await api("POST", "/api/admin/backup/verify", { backupId: b.id, type: b.kind });
    } else {
      const b = latest("database");
      if (!b) { text($("action-msg"), "No database backup to test-restore."); return; }
      what = "test-restore (dry run) of " + b.id;
      r = await api("POST", "/api/admin/backup/restore",
                    { backupId: b.id, type: "database", dryRun: true, verify: true });
    }
    await poll();
    await watchJob(r.jobId, what);
  } catch (e) { handle(e); }
}

function showApp(on) {
  $("signin").hidden = on;
  $("app").hidden = !on;
  $("signout").hidden = !on;
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  if (on) {
    refreshList().then(poll);
    pollTimer = setInterval(poll, 2000);
  }
}

function signOut(msg) {
  sessionStorage.removeItem(KEY);
  showApp(false);
  text($("signin-error"), msg || "");
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    sessionStorage.setItem(KEY, t);
    $("token").value = "";
    try {
      await api("GET", "/api/admin/backup/status");
      text($("signin-error"), "");
      showApp(true);
    } catch (e) {
      signOut(e instanceof ApiError && e.status === 401 ? "That token is not valid." : e.message);
    }
  });
  $("signout").addEventListener("click", () => signOut(""));
  for (const b of document.querySelectorAll("[data-action]"))
    b.addEventListener("click", () => act(b.dataset.action));
  if (token()) showApp(true);
});
