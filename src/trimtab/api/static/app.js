// trimtab's dashboard: one plain ES module, no build step, nothing fetched but the API.
//
// Safety: every string that comes from the server (reasons, titles, messages, names) is
// put in the page as text (textContent, createTextNode) or as a plain attribute, never
// through innerHTML; the only URLs built from server data are the API's own, with each
// part passed through encodeURIComponent. A report (HTML trimtab wrote) is shown in a
// sandboxed iframe without allow-same-origin, so its scripts cannot read the session.
//
// The session (tokens, role) lives in sessionStorage: gone when the tab closes. The
// access token is refreshed before it expires; a 401 tries one refresh, then logs out.

const API = "/api/v1";
const SESSION_KEY = "trimtab.session";
const ROLES = { viewer: 0, approver: 1, admin: 2 };
// The least role each write needs (the API refuses the rest; this only hides buttons).
const NEEDS = { approve: "approver", reject: "approver", pause: "approver", resume: "approver", mode: "admin" };
const MODES = ["monitor", "approve", "auto"];
const PAGES = ["overview", "risk", "proposals", "journal", "alerts", "reports"];
const POLL_MS = 5000; // the current page is reloaded this often (rendered only if changed)
const REFRESH_EARLY_S = 30; // refresh the access token this long before it expires (at most 20 % of its life)
const JOURNAL_LIMIT = 200; // decisions shown on the journal page
const TRANSFERS_LIMIT = 50; // transfers between subaccounts shown on the overview
// Transfer statuses that moved nothing although asked: their rows stand out.
const NOTHING_MOVED = ["refused", "not_made", "rejected", "expired"];

let session = loadSession();
let refreshTimer = null;
let pollTimer = null;
let refreshing = null; // the refresh in flight, shared by concurrent 401s
const lastData = {}; // page -> JSON text of the data last rendered

// --- DOM helpers: text only ----------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "selected" || k === "disabled" || k === "hidden")
      el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const $ = (id) => document.getElementById(id);

// --- formatting ------------------------------------------------------------------------
const dash = "—";
function num(v, digits = 2) {
  if (v === null || v === undefined || v === "") return dash;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function qty(v) {
  if (v === null || v === undefined) return dash;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  const digits = Math.abs(n) >= 1000 ? 2 : Math.abs(n) >= 1 ? 4 : 6;
  return n.toLocaleString("en-US", { maximumFractionDigits: digits });
}
function pct(v, digits = 1) {
  if (v === null || v === undefined) return dash;
  return `${num(Number(v) * 100, digits)} %`;
}
function when(iso) {
  if (!iso) return dash;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const t = d.toISOString();
  return `${t.slice(0, 10)} ${t.slice(11, 16)} UTC`;
}
function ago(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  const sec = Math.round(Number(seconds));
  if (sec < 120) return `${sec} s ago`;
  if (sec < 7200) return `${Math.round(sec / 60)} min ago`;
  if (sec < 172800) return `${Math.round(sec / 3600)} h ago`;
  return `${Math.round(sec / 86400)} days ago`;
}
function reasonsText(reasons) {
  if (!reasons) return "";
  if (!Array.isArray(reasons)) return String(reasons);
  return reasons
    .map((r) => (r && typeof r === "object" ? r.message || r.code || JSON.stringify(r) : String(r)))
    .join("; ");
}
function list(value) {
  if (Array.isArray(value)) return value;
  if (value && typeof value === "object") {
    for (const key of ["items", "rows", "data"]) if (Array.isArray(value[key])) return value[key];
  }
  return [];
}

// --- session -------------------------------------------------------------------------
function loadSession() {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function saveSession(tokens, username) {
  session = {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token || (session && session.refresh_token),
    role: tokens.role || (session && session.role) || "viewer",
    username: username || tokens.username || (session && session.username) || "",
    expires_at: Date.now() + Number(tokens.expires_in || 300) * 1000,
    lifetime_s: Number(tokens.expires_in || 300),
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  scheduleRefresh();
}

function can(action) {
  if (!session) return false;
  return (ROLES[session.role] ?? -1) >= ROLES[NEEDS[action] || "admin"];
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const early = Math.min(REFRESH_EARLY_S, 0.2 * (session.lifetime_s || 300)) * 1000;
  const wait = Math.max(session.expires_at - Date.now() - early, 1000);
  refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), wait);
}

async function refreshTokens() {
  if (!session || !session.refresh_token) throw new ApiError(401, "session expired");
  if (!refreshing) {
    refreshing = (async () => {
      const res = await fetch(`${API}/auth/refresh`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: session.refresh_token }),
      });
      if (!res.ok) {
        logout("Your session expired: log in again.");
        throw new ApiError(res.status, "session expired");
      }
      saveSession(await res.json());
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

function logout(message) {
  clearTimeout(refreshTimer);
  clearInterval(pollTimer);
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  for (const k of Object.keys(lastData)) delete lastData[k];
  // Nothing of this session stays in the page for the next person to log in.
  for (const p of PAGES) $(`${p}-body`).replaceChildren();
  $("proposal-count").textContent = "";
  showLogin(message);
}

// --- the API -------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detailText(body, status) {
  const d = body && (body.detail ?? body.message ?? body.error);
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    // FastAPI's validation errors: [{loc: [...], msg: "..."}]
    return d
      .map((e) => (e && e.msg ? `${(e.loc || []).filter((x) => x !== "body").join(".")}: ${e.msg}` : String(e)))
      .join("; ");
  }
  if (d && typeof d === "object") return JSON.stringify(d);
  return `the server answered ${status}`;
}

async function api(path, { method = "GET", body, retry = true } = {}) {
  const headers = { Accept: "application/json" };
  if (session) headers.Authorization = `Bearer ${session.access_token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && retry && session && session.refresh_token) {
    await refreshTokens();
    return api(path, { method, body, retry: false });
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (res.status === 401) {
    logout("Your session expired: log in again.");
    throw new ApiError(401, detailText(data, 401));
  }
  if (!res.ok) throw new ApiError(res.status, detailText(data, res.status));
  return data;
}

// Reads that the page can live without (a missing endpoint shows a note, not a blank page).
async function optional(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e.status === 401) throw e;
    return { __error: e.message };
  }
}

// --- flash messages --------------------------------------------------------------------
let flashTimer = null;
function flash(message, kind = "ok") {
  const el = $("flash");
  el.textContent = message;
  el.className = `flash ${kind}`;
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    el.hidden = true;
  }, 12000);
}

// --- login ---------------------------------------------------------------------------
function showLogin(message) {
  for (const p of PAGES) $(`page-${p}`).hidden = true;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login-page").hidden = false;
  const err = $("login-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("password").value = "";
  $("username").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  const err = $("login-error");
  err.hidden = true;
  if (!username || !password) {
    err.textContent = "Give a username and a password.";
    err.hidden = false;
    return;
  }
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const res = await fetch(`${API}/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username, password }),
    });
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      err.textContent =
        res.status === 401
          ? `Login failed: ${detailText(body, res.status)}`
          : res.status === 429
            ? `Too many attempts: ${detailText(body, res.status)}`
            : `Login failed (${res.status}): ${detailText(body, res.status)}`;
      err.hidden = false;
      $("password").value = "";
      $("password").focus();
      return;
    }
    saveSession(body, username);
    $("password").value = "";
    enter();
  } catch (e) {
    err.textContent = `Cannot reach the server: ${e.message}`;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function enter() {
  $("login-page").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("who").textContent = `${session.username} (${session.role})`;
  scheduleRefresh();
  if (!PAGES.includes(location.hash.slice(1))) location.hash = "#overview";
  else route();
  clearInterval(pollTimer);
  pollTimer = setInterval(() => {
    if (session && !document.hidden) load(currentPage(), { quiet: true });
  }, POLL_MS);
}

// --- routing -------------------------------------------------------------------------
function currentPage() {
  const p = location.hash.slice(1);
  return PAGES.includes(p) ? p : "overview";
}

function route() {
  if (!session) return showLogin();
  const page = currentPage();
  for (const p of PAGES) $(`page-${p}`).hidden = p !== page;
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  load(page);
}

const LOADERS = {};

async function load(page, { quiet = false } = {}) {
  const body = $(`${page}-body`);
  // The placeholder only on an empty page: over a rendered one it would wipe what the
  // person is typing before renderKeeping could keep it.
  if (!quiet && !body.firstChild) body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const data = await LOADERS[page].fetch();
    const text = JSON.stringify(data);
    if (text === lastData[page]) return; // nothing new: keep what the person is typing
    lastData[page] = text;
    renderKeeping(body, () => LOADERS[page].render(data));
  } catch (e) {
    if (e.status === 401 || !session) return;
    if (!quiet) body.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load: ${e.message}`));
  }
}

// Re-render without losing what the person typed or where the focus was.
function renderKeeping(container, build) {
  const kept = {};
  for (const el of container.querySelectorAll("input[id], select[id], textarea[id]"))
    kept[el.id] = el.type === "checkbox" ? el.checked : el.value;
  const focused = document.activeElement && container.contains(document.activeElement) ? document.activeElement.id : null;
  container.replaceChildren(build());
  for (const [id, v] of Object.entries(kept)) {
    const el = document.getElementById(id);
    if (!el || !container.contains(el)) continue;
    if (el.type === "checkbox") el.checked = v;
    else el.value = v;
  }
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function reload(...pages) {
  for (const p of pages) delete lastData[p];
  load(currentPage());
}

// --- shared pieces -------------------------------------------------------------------
// rowClass: row -> a class for its <tr> (or null); label: the block becomes a named region.
function table(caption, columns, rows, { empty = "None.", rowClass = null, label = null } = {}) {
  const wrap = label ? "section" : "div";
  const named = { class: "block", "aria-label": label };
  if (!rows.length) return h(wrap, named, caption ? h("h3", {}, caption) : null, h("p", { class: "muted" }, empty));
  return h(
    wrap,
    named,
    caption ? h("h3", {}, caption) : null,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
        h(
          "tbody",
          {},
          rows.map((r) =>
            h("tr", { class: rowClass ? rowClass(r) : null }, columns.map((c) => h("td", { class: c.num ? "num" : c.nowrap ? "nowrap" : null, "data-label": c.label }, c.get(r)))),
          ),
        ),
      ),
    ),
  );
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}

function field(label, value, cls = "") {
  return h("div", { class: `field ${cls}` }, h("dt", {}, label), h("dd", {}, value));
}

function note(msg) {
  return h("p", { class: "muted" }, msg);
}

function slug(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

// A write: checks the reason, sends, says what happens next, reloads.
async function write(button, path, body, done, reasonId) {
  button.disabled = true;
  try {
    const receipt = await api(path, { method: "POST", body });
    flash(receiptText(receipt, done), "ok");
    // A reason is of one command: the next one needs its own.
    if (reasonId && $(reasonId)) $(reasonId).value = "";
    reload("overview", "proposals", "journal");
  } catch (e) {
    if (e.status !== 401) flash(`Refused: ${e.message}`, "bad");
  } finally {
    button.disabled = false;
  }
}

function receiptText(r, done) {
  if (!r || typeof r !== "object") return done;
  const parts = [done];
  if (r.command_id !== undefined) parts.push(`command ${r.command_id} recorded`);
  if (r.takes_effect) parts.push(String(r.takes_effect));
  else if (r.runner_alive === false) parts.push("the runner is down: it applies this at its next start");
  else if (r.runner_alive === true) parts.push("the runner applies it within one cycle");
  for (const n of r.notes || []) parts.push(String(n));
  return parts.join(" · ");
}

function commandText(c) {
  const a = c.args || {};
  let what = c.kind;
  if (c.kind === "approve") what = `approve proposal ${a.proposal_id}${a.legs ? ` leg ${a.legs.join(", ")}` : " (all legs)"}`;
  else if (c.kind === "reject") what = `reject proposal ${a.proposal_id}`;
  else if (c.kind === "mode") what = `mode ${a.mode}`;
  else if (c.kind === "limits") what = `limit ${a.key} = ${JSON.stringify(a.value)}`;
  else if (c.kind === "close") what = a.all ? "close all" : `close ${(a.symbols || []).join(", ")}`;
  return what;
}

// --- overview: portfolio, equity, subaccounts ----------------------------------------
LOADERS.overview = {
  async fetch() {
    const [status, holdings, equity, commands, transfers] = await Promise.all([
      api("/status"),
      optional("/holdings"),
      optional("/equity"),
      optional("/commands"),
      optional(`/transfers?limit=${TRANSFERS_LIMIT}`),
    ]);
    return { status, holdings, equity, pending: pendingOf(commands), transfers };
  },
  render({ status, holdings, equity, pending, transfers }) {
    const run = status.run || {};
    const beat = status.heartbeat || {};
    const account = status.account || {};
    const gate = status.gate || {};
    const subs = status.subaccounts || [];
    setProposalCount(status.pending_proposals);
    fillSubaccountFilter(subs.map((sub) => sub.name));
    return h(
      "div",
      {},
      h(
        "section",
        { class: "card", "aria-label": "Portfolio" },
        h("h3", {}, "Portfolio"),
        h(
          "dl",
          { class: "fields" },
          field("Equity", [h("strong", { class: "big" }, num(account.equity)), h("span", { class: "unit" }, " USDT")], "span2"),
          field("Account", badge(account.trading_state || dash)),
          field("Risk score", riskText(account.risk_score, account.risk_level)),
          field("Run", `${run.run_id || dash} (${run.kind || ""}, ${run.status || ""})`),
          field("Last bar", when(status.as_of)),
          field("Runner", beat.alive ? badge("running", "ok") : badge("down", "warn")),
          field("Heartbeat", ago(beat.age_seconds)),
          field("Books", gate.state ? badge(gate.state) : dash),
          field("Waiting", `${status.pending_proposals ?? 0} proposal(s), ${status.pending_commands ?? 0} command(s)`),
        ),
        gate.summary ? h("p", { class: "muted" }, gate.summary) : null,
      ),
      equityBlock(equity),
      h(
        "section",
        { class: "block", "aria-label": "Subaccounts" },
        h("h3", {}, "Subaccounts"),
        subs.length ? h("div", { class: "cards" }, subs.map((sub) => subaccountCard(sub, pending))) : note("The runner has not saved a status yet."),
      ),
      holdingsBlock(holdings),
      transfersBlock(transfers),
    );
  },
};

// The commands still waiting for the runner (GET /commands is oldest first).
function pendingOf(commands) {
  return list(commands).filter((c) => c.status === "pending");
}

function riskText(score, level) {
  if (score === null || score === undefined) return dash;
  return [`${num(score, 0)} / 100 `, level ? badge(level, `level-${level}`) : null];
}

function setProposalCount(n) {
  $("proposal-count").textContent = n ? String(n) : "";
}

function fillSubaccountFilter(names) {
  const select = $("journal-subaccount");
  const have = [...select.options].map((o) => o.value);
  for (const name of names) if (!have.includes(name)) select.append(h("option", { value: name }, name));
}

function subaccountCard(sub, pending) {
  const name = sub.name;
  const mine = pending.filter((c) => c.subaccount === name || c.subaccount === null);
  const id = slug(name);
  const reasonId = `reason-sub-${id}`;
  const modeId = `mode-sub-${id}`;
  const reasonOf = () => $(reasonId).value.trim();
  const act = (verb, extra = () => ({})) => async (ev) => {
    const reason = reasonOf();
    if (!reason) return flash(`Give a reason to ${verb} ${name}.`, "bad");
    await write(ev.currentTarget, `/subaccounts/${encodeURIComponent(name)}/${verb}`, { ...extra(), reason }, `${verb} ${name}`, reasonId);
  };
  const writes = can("pause")
    ? h(
        "div",
        { class: "actions" },
        h("label", { for: reasonId }, `Reason for ${name}`),
        h("input", { id: reasonId, type: "text", placeholder: "why (required)", autocomplete: "off" }),
        h(
          "div",
          { class: "buttons" },
          sub.paused
            ? h("button", { type: "button", onclick: act("resume") }, `Resume ${name}`)
            : h("button", { type: "button", class: "warn", onclick: act("pause") }, `Pause ${name}`),
        ),
        can("mode")
          ? h(
              "div",
              { class: "mode-set" },
              h("label", { for: modeId }, `Mode of ${name}`),
              h(
                "div",
                { class: "inline" },
                h("select", { id: modeId }, MODES.map((m) => h("option", { value: m, selected: m === sub.mode }, m))),
                h("button", { type: "button", onclick: act("mode", () => ({ mode: $(modeId).value })) }, `Set mode of ${name}`),
              ),
            )
          : null,
      )
    : null;
  return h(
    "article",
    { class: "card sub", "aria-label": `Subaccount ${name}` },
    h("h4", {}, name),
    h(
      "dl",
      { class: "fields" },
      field("Mode", badge(sub.mode || dash, "mode")),
      field("Breaker", badge(sub.trading_state || dash)),
      field("State", sub.paused ? badge("paused", "warn") : badge("running", "ok")),
      field("Risk score", riskText(sub.risk_score, sub.risk_level)),
      field("Equity", `${num(sub.equity)} USDT`),
      field("Cash", `${num(sub.cash)} USDT`),
      sub.envelope
        ? field("Envelope", `${num(sub.envelope.max_order_notional, 0)} / order, ${num(sub.envelope.max_daily_turnover, 0)} / day`)
        : null,
      sub.envelope ? field("Turnover today", `${num(sub.turnover_today)} USDT`) : null,
    ),
    mine.length
      ? h(
          "ul",
          { class: "pending-cmds", "aria-label": `Pending commands of ${name}` },
          mine.map((c) => h("li", {}, `${commandText(c)} by ${c.actor || "?"} — waits for the runner`)),
        )
      : null,
    writes,
  );
}

function holdingsBlock(holdings) {
  if (!holdings || holdings.__error) return h("div", { class: "block" }, h("h3", {}, "Holdings"), note(`No holdings: ${(holdings && holdings.__error) || "none"}`));
  const rows = [];
  for (const [name, sub] of Object.entries(holdings.subaccounts || {})) {
    for (const pos of (sub && sub.positions) || []) rows.push({ name, ...pos });
  }
  const priced = holdings.priced_at ? ` (priced ${when(holdings.priced_at)})` : "";
  return table(
    `Holdings${priced}`,
    [
      { label: "Subaccount", get: (r) => r.name },
      { label: "Symbol", get: (r) => (r.side && r.kind === "perp" ? `${r.symbol} (${r.side})` : r.symbol) },
      { label: "Quantity", num: true, get: (r) => qty(r.quantity) },
      { label: "Price", num: true, get: (r) => num(r.price) },
      { label: "Value USDT", num: true, get: (r) => num(r.value) },
      { label: "Weight", num: true, get: (r) => pct(r.weight) },
    ],
    rows,
    { empty: "No positions: all in cash." },
  );
}

// Transfers between subaccounts (GET /transfers, newest first). Fields this page does not
// know are ignored and a status it does not know is shown as the API spells it.
function transfersBlock(transfers) {
  const title = "Transfers (newest first)";
  if (!transfers || transfers.__error)
    return h("section", { class: "block", "aria-label": "Transfers" }, h("h3", {}, title), note(`No transfers: ${(transfers && transfers.__error) || "none"}`));
  const time = (t) => {
    const ms = new Date(t.timestamp).getTime();
    return Number.isNaN(ms) ? -Infinity : ms;
  };
  // Stable: rows of one bar keep the API's order.
  const rows = list(transfers).filter((t) => t && typeof t === "object").sort((a, b) => time(b) - time(a));
  const statusOf = (t) => String(t.status ?? dash);
  return table(
    title,
    [
      { label: "Time", nowrap: true, get: (t) => when(t.timestamp) },
      { label: "From → to", nowrap: true, get: (t) => `${t.from ?? t.source ?? dash} → ${t.to ?? t.target ?? dash}` },
      { label: "Asked USDT", num: true, get: (t) => num(t.requested ?? t.amount) },
      { label: "Moved USDT", num: true, get: (t) => num(t.moved) },
      {
        label: "Status",
        // One element per cell: on a phone a cell is a grid of its label and its children.
        get: (t) =>
          h(
            "span",
            {},
            badge(statusOf(t), slug(statusOf(t)).toLowerCase()),
            t.proposal_id !== undefined && t.proposal_id !== null ? h("span", { class: "muted" }, ` proposal ${t.proposal_id}`) : null,
          ),
      },
      {
        label: "Who asked",
        get: (t) => h("div", {}, t.origin || dash, t.reason ? h("div", { class: "muted" }, String(t.reason)) : null),
      },
      { label: "Why less or nothing", get: (t) => (t.why ? String(t.why) : "") },
    ],
    rows,
    {
      empty: "No transfers yet.",
      label: "Transfers",
      rowClass: (t) => `transfer status-${slug(statusOf(t)).toLowerCase()}${NOTHING_MOVED.includes(statusOf(t)) ? " nothing-moved" : movedLess(t) ? " moved-less" : ""}`,
    },
  );
}

// Made, but cut below what was asked (by more than the half cent the page rounds away).
function movedLess(t) {
  const asked = Number(t.requested ?? t.amount), moved = Number(t.moved);
  return Number.isFinite(asked) && Number.isFinite(moved) && moved > 0 && asked - moved >= 0.005;
}

// Equity series: {name: [[t, equity], ...]} from whatever shape the API gives.
function equitySeries(equity) {
  const out = {};
  const push = (name, t, v) => {
    if (t === undefined || v === null || v === undefined || !Number.isFinite(Number(v))) return;
    (out[name] ||= []).push([new Date(t).getTime(), Number(v)]);
  };
  const fromRows = (name, rows) => {
    for (const r of rows) {
      if (Array.isArray(r)) push(name, r[0], r[1]);
      else if (r && typeof r === "object") push(r.subaccount && name === null ? r.subaccount : name || r.subaccount || "account", r.timestamp ?? r.t, r.equity ?? r.value);
    }
  };
  if (!equity || equity.__error) return out;
  if (Array.isArray(equity)) fromRows(null, equity);
  else if (Array.isArray(equity.timestamps)) {
    for (const [name, values] of Object.entries(equity)) {
      if (name === "timestamps" || !Array.isArray(values)) continue;
      values.forEach((v, i) => push(name, equity.timestamps[i], v));
    }
    if (equity.subaccounts && typeof equity.subaccounts === "object")
      for (const [name, values] of Object.entries(equity.subaccounts))
        if (Array.isArray(values)) values.forEach((v, i) => push(name, equity.timestamps[i], v));
  } else {
    const series = equity.series || equity.subaccounts || {};
    for (const [name, rows] of Object.entries(series)) if (Array.isArray(rows)) fromRows(name, rows);
    if (Array.isArray(equity.account)) fromRows("account", equity.account);
    if (Array.isArray(equity.total)) fromRows("account", equity.total);
  }
  for (const name of Object.keys(out)) {
    if (name !== "account" && /^\*?account$/i.test(name)) {
      out.account = out[name];
      delete out[name];
    }
  }
  for (const v of Object.values(out)) v.sort((a, b) => a[0] - b[0]);
  // The account's total when the API gives subaccounts only: the sum at each shared time.
  if (!out.account && Object.keys(out).length > 1) {
    const sums = new Map();
    const counts = new Map();
    for (const rows of Object.values(out))
      for (const [t, v] of rows) {
        sums.set(t, (sums.get(t) || 0) + v);
        counts.set(t, (counts.get(t) || 0) + 1);
      }
    const n = Object.keys(out).length;
    out.account = [...sums.entries()].filter(([t]) => counts.get(t) === n).sort((a, b) => a[0] - b[0]);
  }
  return out;
}

const COLOURS = ["#1f6feb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d"];

function equityBlock(equity) {
  const series = equitySeries(equity);
  const wrap = h("section", { class: "block", "aria-label": "Equity" }, h("h3", {}, "Equity (USDT)"));
  if (equity && equity.__error) return append(wrap, [note(`No equity: ${equity.__error}`)]), wrap;
  const subs = Object.keys(series).filter((n) => n !== "account").sort();
  const charts = [];
  // The account and its subaccounts on charts of their own: on one scale the smaller
  // subaccounts would be flat lines at the bottom.
  if (series.account && series.account.length > 1) charts.push(lineChart("Account", { account: series.account }, ["account"]));
  if (subs.some((n) => series[n].length > 1)) charts.push(lineChart("Subaccounts", series, subs));
  if (!charts.length) return append(wrap, [note("Not enough bars yet for a chart.")]), wrap;
  append(wrap, [h("div", { class: "charts" }, charts)]);
  return wrap;
}

function lineChart(title, series, names) {
  const all = names.flatMap((n) => series[n]);
  // Drawn at the width it is shown at (a phone's 12 px ticks stay 12 px), two per row on
  // a wide screen.
  const wide = window.innerWidth > 900;
  const W = Math.round(Math.min(Math.max((wide ? window.innerWidth / 2 : window.innerWidth) - 60, 300), 640));
  const H = Math.round(W * 0.45), L = 58, R = 10, T = 10, B = 24;
  let t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  let v0 = Math.min(...all.map((p) => p[1])), v1 = Math.max(...all.map((p) => p[1]));
  if (t1 === t0) t1 = t0 + 1;
  if (v1 === v0) { v0 -= 1; v1 += 1; }
  const pad = (v1 - v0) * 0.06; v0 -= pad; v1 += pad;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    grid.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    grid.push(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, num(v, 0)));
  }
  const nx = W < 420 ? 2 : 3;
  for (let i = 0; i <= nx; i++) {
    const t = t0 + ((t1 - t0) * i) / nx;
    grid.push(s("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === nx ? "end" : "middle", class: "tick" }, new Date(t).toISOString().slice(0, 10)));
  }
  const colour = (i) => COLOURS[i % COLOURS.length];
  const lines = names.map((name, i) =>
    s(
      "polyline",
      { points: series[name].map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "), fill: "none", stroke: colour(i), "stroke-width": 2 },
      s("title", {}, name),
    ),
  );
  const from = new Date(t0).toISOString().slice(0, 10), to = new Date(t1).toISOString().slice(0, 10);
  return h(
    "figure",
    { class: "chart-box" },
    h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `${title} equity of ${names.join(", ")} from ${from} to ${to}` }, grid, lines),
    h(
      "ul",
      { class: "legend" },
      names.map((n, i) => h("li", {}, h("span", { class: "swatch", style: `background:${colour(i)}` }), `${n}: ${num(series[n][series[n].length - 1][1])}`)),
    ),
  );
}

// --- risk ----------------------------------------------------------------------------
LOADERS.risk = {
  async fetch() {
    const review = await optional("/review");
    if (review && !review.__error) return { review };
    const status = await api("/status");
    return { review: status.reviews || {} };
  },
  render({ review }) {
    const reviews = review.reviews || review.subaccounts || review;
    const names = Object.keys(reviews).sort((a, b) => (a === "account" ? -1 : b === "account" ? 1 : a.localeCompare(b)));
    if (!names.length) return note("No review yet: the runner reviews the holdings every review_every bars.");
    return h("div", { class: "cards wide" }, names.map((n) => riskCard(n, reviews[n] || {})));
  },
};

function riskCard(name, r) {
  const score = r.risk_score === null || r.risk_score === undefined ? null : Number(r.risk_score);
  const factors = r.factors || [];
  const flags = r.flags || [];
  const recs = r.recommendations || [];
  return h(
    "article",
    { class: "card", "aria-label": `Risk of ${name}` },
    h("h3", {}, name === "account" ? "Whole account" : name),
    h(
      "p",
      { class: "score" },
      h("strong", { class: "big" }, score === null ? dash : num(score, 0)),
      " / 100 ",
      r.risk_level ? badge(r.risk_level, `level-${r.risk_level}`) : null,
      h("span", { class: "muted" }, ` as of ${when(r.timestamp)}`),
    ),
    score === null ? null : h("div", { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": score.toFixed(0), "aria-label": `Risk score of ${name}` }, h("span", { style: `width:${Math.max(0, Math.min(100, score)).toFixed(1)}%` })),
    table(
      "Factors",
      [
        { label: "Factor", get: (f) => f.name },
        { label: "Score", num: true, get: (f) => num(f.score, 0) },
        { label: "Weight", num: true, get: (f) => pct(f.weight, 0) },
        { label: "Adds", num: true, get: (f) => num(f.contribution, 1) },
        { label: "Why", get: (f) => f.explanation || "" },
      ],
      factors,
    ),
    r.summary ? h("p", { class: "summary" }, String(r.summary)) : null,
    r.regime ? h("p", { class: "muted" }, `Market regime: ${r.regime}`) : null,
    flags.length
      ? h(
          "div",
          { class: "block" },
          h("h4", {}, "Flags"),
          h("ul", { class: "flags" }, flags.map((f) => (typeof f === "object" && f ? h("li", {}, f.severity ? badge(f.severity) : null, " ", f.message || f.code || "") : h("li", {}, String(f))))),
        )
      : null,
    recs.length
      ? h(
          "div",
          { class: "block" },
          h("h4", {}, "What would lower it"),
          h("ol", { class: "recs" }, recs.map((rec) => h("li", {}, rec.reason || rec.action || "", rec.expected_effect ? h("div", { class: "muted" }, rec.expected_effect) : null))),
        )
      : null,
  );
}

// --- proposals -------------------------------------------------------------------------
LOADERS.proposals = {
  async fetch() {
    const [proposals, commands] = await Promise.all([api("/proposals"), optional("/commands")]);
    return { proposals: list(proposals), pending: pendingOf(commands) };
  },
  render({ proposals, pending }) {
    setProposalCount(proposals.filter((p) => !p.status || p.status === "pending").length);
    if (!proposals.length) return note("No proposal waits for approval.");
    return h("div", { class: "cards wide" }, proposals.map((p) => proposalCard(p, pending)));
  },
};

function proposalCard(p, pending) {
  const id = p.proposal_id ?? p.id;
  const reasonId = `reason-proposal-${slug(id)}`;
  const mine = pending.filter((c) => (c.kind === "approve" || c.kind === "reject") && c.args && Number(c.args.proposal_id) === Number(id));
  const writable = can("approve") && (!p.status || p.status === "pending");
  const reasonOf = () => $(reasonId).value.trim();
  const transfer = p.kind === "transfer" && p.transfer && typeof p.transfer === "object" ? p.transfer : null;
  const approve = (legs) => async (ev) => {
    const reason = reasonOf();
    const what = legs ? `leg ${legs.join(", ")} of proposal ${id}` : transfer ? `the transfer of proposal ${id}` : `every leg of proposal ${id}`;
    if (!reason) return flash(`Give a reason to approve ${what}.`, "bad");
    await write(ev.currentTarget, `/proposals/${encodeURIComponent(id)}/approve`, { legs, reason }, `approved ${what}`, reasonId);
  };
  const reject = async (ev) => {
    const reason = reasonOf();
    if (!reason) return flash(`Give a reason to reject proposal ${id}.`, "bad");
    await write(ev.currentTarget, `/proposals/${encodeURIComponent(id)}/reject`, { reason }, `rejected proposal ${id}`, reasonId);
  };
  return h(
    "article",
    { class: "card proposal", "aria-label": `Proposal ${id}` },
    h("h3", {}, `Proposal ${id} · ${p.subaccount}`),
    h("p", {}, p.summary || ""),
    h(
      "dl",
      { class: "fields" },
      field("Proposed", when(p.timestamp)),
      field("Expires", when(p.expires_at)),
      field("Status", badge(p.status || "pending")),
      field("Source", p.source || dash),
    ),
    h("p", { class: "why" }, h("strong", {}, "Why: "), reasonsText(p.reasons) || dash),
    transfer
      ? h(
          "dl",
          { class: "fields transfer", "aria-label": `Transfer of proposal ${id}` },
          field("From → to", `${transfer.source ?? dash} → ${transfer.target ?? dash}`),
          field("Asked USDT", num(transfer.amount)),
          field("Who asked", transfer.origin || dash),
          field("Reason", transfer.reason ? String(transfer.reason) : dash),
          transfer.moved !== undefined && transfer.moved !== null ? field("Moved USDT", num(transfer.moved)) : null,
        )
      : null,
    mine.length
      ? h("ul", { class: "pending-cmds", "aria-label": `Pending commands of proposal ${id}` }, mine.map((c) => h("li", {}, `${commandText(c)} by ${c.actor || "?"} — waits for the runner`)))
      : null,
    writable
      ? h(
          "div",
          { class: "reason" },
          h("label", { for: reasonId }, `Reason for proposal ${id}`),
          h("input", { id: reasonId, type: "text", placeholder: "why (required for every approval or rejection)", autocomplete: "off", required: true }),
        )
      : null,
    transfer
      ? null
      : h(
          "ol",
          { class: "legs", start: 0, "aria-label": `Legs of proposal ${id}` },
          (p.legs || []).map((leg) => legItem(id, leg, writable ? approve([Number(leg.leg)]) : null)),
        ),
    writable
      ? h(
          "div",
          { class: "buttons actions" },
          // A transfer is approved whole (the runner's guard may still cut it at its close).
          transfer ? h("button", { type: "button", class: "ok", onclick: approve(null) }, `Approve the transfer of proposal ${id}`) : null,
          !transfer && (p.legs || []).length > 1 ? h("button", { type: "button", onclick: approve(null) }, `Approve all legs of proposal ${id}`) : null,
          h("button", { type: "button", class: "bad", onclick: reject }, `Reject proposal ${id}`),
        )
      : null,
  );
}

function legItem(id, leg, onApprove) {
  const size = leg.quantity !== null && leg.quantity !== undefined ? `${qty(leg.quantity)} ${baseOf(leg.symbol)}` : `${num(leg.quote_quantity)} USDT of`;
  return h(
    "li",
    { class: "leg" },
    h(
      "div",
      { class: "leg-main" },
      h("strong", {}, `Leg ${leg.leg}: `),
      badge(leg.side, `side-${leg.side}`),
      ` ${size} ${leg.symbol}`,
      h("span", { class: "muted" }, ` at ${num(leg.planned_price)} (band ${num(leg.band_low)} – ${num(leg.band_high)}), ${num(leg.notional)} USDT`),
    ),
    h("div", { class: "muted" }, leg.reason || ""),
    leg.status && leg.status !== "pending" ? h("div", {}, badge(leg.status), leg.client_order_id ? ` order ${leg.client_order_id}` : "") : null,
    onApprove && (!leg.status || leg.status === "pending") ? h("button", { type: "button", class: "ok", onclick: onApprove }, `Approve leg ${leg.leg} of proposal ${id}`) : null,
  );
}

function baseOf(symbol) {
  return String(symbol || "").replace(/(USDT|USDC|BUSD|USD)$/, "");
}

// --- journal ---------------------------------------------------------------------------
LOADERS.journal = {
  async fetch() {
    const sub = $("journal-subaccount").value;
    const q = new URLSearchParams({ limit: String(JOURNAL_LIMIT) });
    if (sub) q.set("subaccount", sub);
    const [decisions, orders, fills, commands] = await Promise.all([
      api(`/decisions?${q}`),
      api(`/orders?${q}`),
      optional(`/fills?${q}`),
      optional("/commands"),
    ]);
    // GET /commands is oldest first and not filtered; the other lists come newest first.
    const audit = list(commands)
      .filter((c) => !sub || !c.subaccount || c.subaccount === sub)
      .reverse();
    return { sub, decisions: list(decisions), orders: list(orders), fills: list(fills), audit };
  },
  render({ decisions, orders, fills, audit }) {
    const newest = (rows) => rows;
    return h(
      "div",
      {},
      table(
        "Orders",
        [
          { label: "Time", nowrap: true, get: (o) => when(o.timestamp) },
          { label: "Subaccount", get: (o) => o.subaccount },
          { label: "Order", get: (o) => `${o.side} ${o.symbol}` },
          { label: "Size", num: true, get: (o) => (o.quantity !== null && o.quantity !== undefined ? qty(o.quantity) : `${num(o.quote_quantity)} USDT`) },
          { label: "Filled", num: true, get: (o) => qty(o.filled_quantity) },
          { label: "Status", get: (o) => badge(o.status || dash) },
          { label: "Reason", get: (o) => o.reason || "" },
          { label: "Client order id", get: (o) => h("code", {}, o.client_order_id || dash) },
        ],
        newest(orders),
        { empty: "No order yet." },
      ),
      table(
        "Decisions",
        [
          { label: "Time", nowrap: true, get: (d) => when(d.timestamp) },
          { label: "Subaccount", get: (d) => d.subaccount || dash },
          { label: "Action", get: (d) => `${d.action || dash}${d.paused ? " (paused)" : ""}` },
          { label: "Why", get: (d) => reasonsText(d.reasons) },
          { label: "Targets", get: (d) => targetsText(d.targets) },
          { label: "Orders", get: (d) => decisionOrders(d) },
        ],
        newest(decisions),
        { empty: "No decision yet." },
      ),
      table(
        "Fills",
        [
          { label: "Time", nowrap: true, get: (f) => when(f.timestamp) },
          { label: "Subaccount", get: (f) => f.subaccount },
          { label: "Fill", get: (f) => `${f.side} ${qty(f.quantity)} ${f.symbol}` },
          { label: "Price", num: true, get: (f) => num(f.price) },
          { label: "Fee", num: true, get: (f) => `${num(f.fee, 4)} ${f.fee_currency || ""}` },
          { label: "Order", get: (f) => h("code", {}, f.client_order_id || dash) },
        ],
        newest(fills),
        { empty: "No fill yet." },
      ),
      table(
        "Commands (who, what, why)",
        [
          { label: "Time", nowrap: true, get: (c) => when(c.created_at || c.timestamp || c.at) },
          { label: "Who", get: (c) => c.actor || c.user || c.username || dash },
          { label: "What", get: (c) => (c.kind ? commandText(c) : c.action || c.method || dash) },
          { label: "Subaccount", get: (c) => c.subaccount || "all" },
          { label: "Why", get: (c) => c.reason || "" },
          { label: "Status", get: (c) => (c.status ? badge(c.status) : dash) },
          { label: "Outcome", get: (c) => c.outcome || "" },
        ],
        newest(audit),
        { empty: "No command yet." },
      ),
    );
  },
};

function targetsText(targets) {
  if (!targets || typeof targets !== "object") return "";
  return Object.entries(targets)
    .map(([k, v]) => `${k} ${pct(v, 0)}`)
    .join(", ");
}

function decisionOrders(d) {
  const sent = (d.sent || []).length;
  const parts = [];
  if (sent) parts.push(`${sent} sent`);
  if (d.proposed) parts.push(`${d.proposed} proposed`);
  if (!parts.length && (d.orders || []).length) parts.push(`${d.orders.length} planned`);
  return parts.join(", ") || dash;
}

// --- alerts ----------------------------------------------------------------------------
LOADERS.alerts = {
  async fetch() {
    return { alerts: list(await api("/alerts")) };
  },
  render({ alerts }) {
    if (!alerts.length) return note("No alert.");
    return h(
      "ul",
      { class: "alerts" },
      alerts.map((a) =>
        h(
          "li",
          { class: `card alert ${slug(a.severity || "info")}` },
          h("div", { class: "alert-head" }, badge(a.severity || "info"), " ", h("strong", {}, a.title || a.rule || "alert")),
          h("div", { class: "muted" }, `${when(a.timestamp)} · ${a.rule || ""}${a.subaccount ? ` · ${a.subaccount}` : ""}`),
          a.message ? h("p", {}, a.message) : null,
          a.action ? h("p", { class: "muted" }, h("strong", {}, "What to do: "), a.action) : null,
          (a.deliveries || []).length
            ? h("p", { class: "muted" }, `Sent to: ${a.deliveries.map((d) => `${d.target} (${d.status})`).join(", ")}`)
            : null,
        ),
      ),
    );
  },
};

// --- reports -------------------------------------------------------------------------
let reportUrl = null; // the blob URL of the report shown, revoked when another is shown

LOADERS.reports = {
  async fetch() {
    return { reports: list(await api("/reports")) };
  },
  render({ reports }) {
    if (!reports.length) return note("No finished backtest in the store to report on (trimtab backtest --db URL).");
    const viewer = h("div", { id: "report-view", class: "report-view" });
    return h(
      "div",
      {},
      table(
        "Runs",
        [
          { label: "Run", get: (r) => runIdOf(r) },
          { label: "Kind", get: (r) => (typeof r === "object" ? r.kind || dash : dash) },
          { label: "Status", get: (r) => (typeof r === "object" && r.status ? badge(r.status) : dash) },
          { label: "Command", get: (r) => (typeof r === "object" && r.command ? r.command : dash) },
          { label: "Bars", num: true, get: (r) => (typeof r === "object" && r.bars !== undefined ? num(r.bars, 0) : dash) },
          { label: "Updated", nowrap: true, get: (r) => when(typeof r === "object" ? r.updated_at : null) },
          { label: "Report", get: (r) => h("button", { type: "button", onclick: (ev) => showReport(runIdOf(r), viewer, ev.currentTarget) }, `Show report of ${runIdOf(r)}`) },
        ],
        reports,
      ),
      viewer,
    );
  },
};

function runIdOf(r) {
  return typeof r === "object" && r !== null ? r.run_id || r.run || r.id : String(r);
}

async function showReport(run, viewer, button) {
  button.disabled = true;
  viewer.replaceChildren(note(`Loading the report of ${run}… (the first time, the server makes it: seconds)`));
  try {
    // Fetched with the token (an iframe's src could not send it), then shown from a blob
    // in a sandbox: scripts run (plotly) but in an opaque origin, away from the session.
    const res = await authedFetch(`/reports/${encodeURIComponent(run)}/html`);
    if (!res.ok) {
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      throw new ApiError(res.status, detailText(body, res.status));
    }
    const blob = new Blob([await res.text()], { type: "text/html" });
    if (reportUrl) URL.revokeObjectURL(reportUrl);
    reportUrl = URL.createObjectURL(blob);
    viewer.replaceChildren(
      h(
        "p",
        {},
        h("a", { href: reportUrl, download: `trimtab-report-${slug(run)}.html` }, `Download the report of ${run}`),
      ),
      h("iframe", { src: reportUrl, title: `Report of ${run}`, sandbox: "allow-scripts", class: "report", loading: "lazy" }),
    );
  } catch (e) {
    if (e.status !== 401) viewer.replaceChildren(h("p", { class: "error", role: "alert" }, `No report of ${run}: ${e.message}`));
  } finally {
    button.disabled = false;
  }
}

async function authedFetch(path, retry = true) {
  const res = await fetch(API + path, { headers: { Authorization: `Bearer ${session.access_token}` } });
  if (res.status === 401 && retry) {
    await refreshTokens();
    return authedFetch(path, false);
  }
  return res;
}

// --- start ---------------------------------------------------------------------------
function start() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => {
    logout();
    flash("Logged out.");
  });
  $("refresh").addEventListener("click", () => reload(currentPage()));
  $("journal-subaccount").addEventListener("change", () => reload("journal"));
  window.addEventListener("hashchange", route);
  if (session && session.expires_at > Date.now()) enter();
  else if (session && session.refresh_token) refreshTokens().then(enter, () => showLogin());
  else showLogin();
}

start();
