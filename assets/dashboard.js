// Portico dashboard: renders the admin JSON API and refreshes itself. No dependencies.
"use strict";

const REFRESH_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function backendCell(b) {
  if (!b) return el("span", { class: "muted" }, "—");
  const down = b.down || [];
  const eps = b.endpoints.length
    ? b.endpoints.map((e, i) => {
        const sep = i ? ", " : "";
        return down.includes(e)
          ? el("span", { class: "bad", title: "ejected or failing its health check" }, sep + e + " (down)")
          : sep + e;
      })
    : el("span", { class: "bad" }, "no ready endpoint");
  return el("div", {}, el("code", {}, b.id), el("div", { class: "mono muted" }, eps));
}

// A route's canary: its Ingress and rules, then its backend.
function canaryCell(c) {
  return el("div", { class: "canary" },
    el("span", { class: "tag" }, "canary"), " ", el("span", { class: "mono" }, c.ingress + " · " + c.rules),
    backendCell(c.backend));
}

// Live figures of a route from two samples of its counters: request rate, 5xx ratio and p99 latency over the
// interval (since start on the first sample). Counters are per (Ingress, backend) pair.
const previous = new Map();

function p99(bounds, cum) {
  const total = cum[cum.length - 1];
  if (!total) return null;
  const want = total * 0.99;
  const i = cum.findIndex((c) => c >= want);
  return i < bounds.length ? bounds[i] : Infinity;
}

function fmtSeconds(s) {
  if (s === null) return "—";
  if (s === Infinity) return "> " + 10 + " s";
  return s < 1 ? "≤ " + Math.round(s * 1000) + " ms" : "≤ " + s + " s";
}

function statCell(key, stats, bounds, now) {
  if (!stats) return el("span", { class: "muted" }, "—");
  const prev = previous.get(key);
  previous.set(key, { t: now, classes: stats.classes, latency: stats.latency });
  const base = prev || { t: null, classes: [0, 0, 0, 0, 0], latency: stats.latency.map(() => 0) };
  const d = stats.classes.map((v, i) => Math.max(0, v - base.classes[i]));
  const total = d.reduce((a, b) => a + b, 0);
  const lat = stats.latency.map((v, i) => Math.max(0, v - base.latency[i]));
  const errors = total ? d[4] / total : 0;
  const rate = prev ? total / Math.max(0.001, (now - prev.t) / 1000) : null;
  const q = p99(bounds, lat);
  const all = stats.classes.reduce((a, b) => a + b, 0);
  return el("div", { class: "stat mono" },
    all + " req total", rate === null ? "" : " · " + rate.toFixed(1) + " req/s", " · ",
    el("span", { class: errors > 0.05 ? "bad" : errors > 0 ? "warn" : "ok", title: "share of 5xx answers" },
      (errors * 100).toFixed(1) + "% 5xx"), " · ",
    el("span", { title: "99th percentile, time to response headers" }, "p99 " + fmtSeconds(q)));
}

// Diagnostics by object (`Ingress ns/name`), to show a served route's warnings and a rejected object in place.
function diagnosticsBySubject(diags) {
  const by = new Map();
  for (const d of diags.diagnostics) {
    if (!by.has(d.subject)) by.set(d.subject, []);
    by.get(d.subject).push(d);
  }
  return by;
}

function renderSets(data, diags) {
  const root = document.getElementById("sets");
  const now = Date.now();
  const by = diagnosticsBySubject(diags);
  const served = new Set();
  const sets = data.sets.map((s) => {
    const addrs = [
      ...s.http.map((a) => "http://" + a),
      ...s.https.map((a) => "https://" + a),
    ];
    const rows = [];
    for (const h of s.hosts) {
      for (const p of h.paths) {
        served.add("Ingress " + p.ingress);
        const notes = (by.get("Ingress " + p.ingress) || []).map((d) =>
          el("div", { class: (d.severity === "warning" ? "warn" : "bad") + " diagnostic" }, "⚠ " + d.reason));
        rows.push([
          el("code", {}, h.host),
          el("span", {}, el("code", {}, p.path), " ", el("span", { class: "tag" }, p.kind)),
          el("div", {}, backendCell(p.backend), p.canary ? canaryCell(p.canary) : null),
          el("div", {}, el("span", { class: "mono" }, p.ingress), notes),
          el("span", { class: "mono muted" }, [p.https_redirect ? "→ https " : "", p.policy || ""].join("")),
          statCell(s.name + "|" + h.host + "|" + p.path + "|" + p.kind, p.stats, data.latency_bounds, now),
        ]);
      }
    }
    if (s.default_backend) {
      rows.push([el("span", { class: "muted" }, "(default backend)"), "", backendCell(s.default_backend.backend),
        el("span", { class: "mono" }, s.default_backend.ingress), "", ""]);
    }
    return { s, addrs, rows };
  });
  // Rejected objects (errors on an object none of whose routes is served) are listed in place, in the first set's
  // table: the API cannot tell which set a rejected Ingress was meant for.
  const rejected = [];
  for (const [subject, list] of by) {
    if (served.has(subject)) continue;
    const errors = list.filter((d) => d.severity !== "warning");
    if (!errors.length || !subject.startsWith("Ingress ")) continue;
    rejected.push(subject);
    const row = [el("span", { class: "bad" }, "not served"), "", "",
      el("div", {}, el("span", { class: "mono" }, subject.slice(8)),
        errors.map((d) => el("div", { class: "bad diagnostic" }, d.reason))), "", ""];
    row.rejected = true;
    (sets[0] ? sets[0].rows : []).push(row);
  }
  root.replaceChildren(...sets.map(({ s, addrs, rows }) => {
    const t = rows.length
      ? table(["Host", "Path", "Backend / endpoints", "Ingress", "Policy", "Traffic"], rows)
      : el("p", { class: "muted" }, "no routes");
    if (rows.length) {
      t.querySelectorAll("tbody tr").forEach((tr, i) => { if (rows[i].rejected) tr.className = "rejected"; });
    }
    return el("div", { class: "card set", "data-set": s.name },
      el("h3", {}, "Listener set ", el("code", {}, s.name)),
      el("div", { class: "mono muted" }, addrs.length ? addrs.join("  ") : "no listeners"),
      t);
  }));
  const select = document.getElementById("explain-set");
  if (select.options.length !== data.sets.length) {
    select.replaceChildren(...data.sets.map((s) => el("option", { value: s.name }, s.name)));
  }
  applySearch();
  return rejected;
}

function applySearch() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  document.querySelectorAll("#sets tbody tr").forEach((tr) => {
    tr.classList.toggle("hidden", q !== "" && !tr.textContent.toLowerCase().includes(q));
  });
}

// The badge and the list behind it: rejected objects, endpoints down, backends without a usable endpoint,
// certificates expiring within 14 days.
function renderOverview(o, certs) {
  document.getElementById("version").textContent =
    "v" + o.version + " · up " + fmtUptime(o.uptime_seconds);
  const p = o.problems;
  const items = [];
  if (p.rejected) items.push(el("li", { class: "bad" }, p.rejected + " rejected object(s) or part(s): see Diagnostics"));
  if (p.down_endpoints) items.push(el("li", { class: "bad" }, p.down_endpoints + " endpoint(s) down (ejected or failing checks)"));
  for (const b of p.backends_without_endpoint) {
    items.push(el("li", { class: "bad" }, "backend ", el("code", {}, b), " has no usable endpoint (requests get 503)"));
  }
  for (const s of certs.sets) {
    for (const c of s.certificates.filter((c) => c.expires_in_days < 14)) {
      items.push(el("li", { class: "warn" }, "certificate for ", el("code", {}, c.default ? "(default)" : c.host),
        " in set ", el("code", {}, s.name), " expires in " + c.expires_in_days + " d"));
    }
  }
  const count = items.length;
  const badge = document.getElementById("problems");
  badge.textContent = count ? count + (count === 1 ? " problem" : " problems") : "no problems";
  badge.className = "badge " + (count ? "bad" : "ok");
  document.getElementById("attention-list").replaceChildren(count
    ? el("div", { class: "card" }, el("ul", {}, items))
    : el("p", { class: "ok" }, "nothing needs attention"));
}

function fmtUptime(s) {
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  if (s < 172800) return Math.floor(s / 3600) + " h";
  return Math.floor(s / 86400) + " d";
}

function renderCertificates(data) {
  const root = document.getElementById("certificates");
  const rows = [];
  for (const s of data.sets) {
    for (const c of s.certificates) {
      const days = c.expires_in_days;
      const cls = days < 0 ? "bad" : days < 14 ? "warn" : "ok";
      rows.push([
        el("code", {}, s.name),
        el("code", {}, c.default ? "(default)" : c.host),
        c.subject,
        el("span", { class: cls }, c.not_after + " (" + days + " d)"),
        el("span", { class: "mono" }, c.source),
      ]);
    }
  }
  root.replaceChildren(rows.length
    ? el("div", { class: "card" }, table(["Set", "Host", "Subject", "Not after", "Source"], rows))
    : el("p", { class: "muted" }, "no TLS listeners"));
}

function renderDiagnostics(data) {
  const root = document.getElementById("diagnostics");
  root.replaceChildren(data.diagnostics.length
    ? el("div", { class: "card" }, table(["Subject", "Reason"],
        data.diagnostics.map((d) => [el("code", {}, d.subject),
          el("span", { class: (d.severity === "warning" ? "warn" : "bad") + " diagnostic" },
            (d.severity === "warning" ? "warning: " : "") + d.reason)])))
    : el("p", { class: "ok" }, "no object rejected"));
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [routes, certs, diags, overview] = await Promise.all([
      getJson("/api/routes"), getJson("/api/certificates"), getJson("/api/diagnostics"), getJson("/api/overview"),
    ]);
    renderSets(routes, diags);
    renderCertificates(certs);
    renderDiagnostics(diags);
    renderOverview(overview, certs);
    status.textContent = "generation " + routes.generation + " · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "cannot reach the admin API: " + e.message;
  }
}

document.getElementById("search").addEventListener("input", applySearch);
document.getElementById("explain").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const q = new URLSearchParams({ set: f.get("set") || "", host: f.get("host") || "", path: f.get("path") || "/" });
  const out = document.getElementById("explain-result");
  try {
    const r = await fetch("/api/explain?" + q, { cache: "no-store" });
    out.textContent = JSON.stringify(await r.json(), null, 2);
    out.className = "mono " + (r.ok ? "" : "bad");
  } catch (e) {
    out.textContent = "cannot reach the admin API: " + e.message;
  }
});

// `?q=TEXT` fills the filter; `?host=H&path=P&set=S` fills the explain form and runs it (links and tests).
async function fromLocation() {
  const params = new URLSearchParams(location.search);
  if (params.get("q")) document.getElementById("search").value = params.get("q");
  await refresh();
  if (params.get("host")) {
    const form = document.getElementById("explain");
    form.elements.host.value = params.get("host");
    if (params.get("path")) form.elements.path.value = params.get("path");
    if (params.get("set")) form.elements.set.value = params.get("set");
    form.requestSubmit();
  }
}

fromLocation();
setInterval(refresh, REFRESH_MS);
