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

function renderSets(data) {
  const root = document.getElementById("sets");
  root.replaceChildren(...data.sets.map((s) => {
    const addrs = [
      ...s.http.map((a) => "http://" + a),
      ...s.https.map((a) => "https://" + a),
    ];
    const rows = [];
    for (const h of s.hosts) {
      for (const p of h.paths) {
        rows.push([
          el("code", {}, h.host),
          el("span", {}, el("code", {}, p.path), " ", el("span", { class: "tag" }, p.kind)),
          el("div", {}, backendCell(p.backend), p.canary ? canaryCell(p.canary) : null),
          el("span", { class: "mono" }, p.ingress),
          p.https_redirect ? "→ https" : "",
        ]);
      }
    }
    if (s.default_backend) {
      rows.push([el("span", { class: "muted" }, "(default backend)"), "", backendCell(s.default_backend.backend),
        el("span", { class: "mono" }, s.default_backend.ingress), ""]);
    }
    return el("div", { class: "card set", "data-set": s.name },
      el("h3", {}, "Listener set ", el("code", {}, s.name)),
      el("div", { class: "mono muted" }, addrs.length ? addrs.join("  ") : "no listeners"),
      rows.length
        ? table(["Host", "Path", "Backend / endpoints", "Ingress", ""], rows)
        : el("p", { class: "muted" }, "no routes"));
  }));
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
    const [routes, certs, diags] = await Promise.all([
      getJson("/api/routes"), getJson("/api/certificates"), getJson("/api/diagnostics"),
    ]);
    renderSets(routes);
    renderCertificates(certs);
    renderDiagnostics(diags);
    status.textContent = "generation " + routes.generation + " · updated " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "cannot reach the admin API: " + e.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
