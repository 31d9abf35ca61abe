// The gatehouse dashboard: reads /admin/dashboard/state every 2 s and draws it. No library,
// no request leaves the admin listener. The admin token (when the gateway has one) comes from
// the page's `#token=` fragment or the form, and is kept in sessionStorage for this tab only.
"use strict";

const STATE_URL = "/admin/dashboard/state";
const TOKEN_KEY = "gatehouse-admin-token";
const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// `#token=...` in the URL: stored, then removed from the address bar (fragments are never
// sent to the server, but should not linger in history either).
function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
}

// A DOM element with text or children; never innerHTML, so no value can become markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

// A sparkline of `values` (null: no data that second), scaled to its own maximum.
function sparkline(values, kind, format, route) {
  const width = 120, height = 28, pad = 2;
  const numbers = values.filter((v) => v !== null);
  const max = Math.max(1e-9, ...numbers);
  const step = (width - 2 * pad) / Math.max(1, values.length - 1);
  let d = "";
  let pen = "M";
  values.forEach((v, i) => {
    if (v === null) { pen = "M"; return; }
    const x = pad + i * step;
    const y = height - pad - (v / max) * (height - 2 * pad);
    d += `${pen}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = "L";
  });
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = `${route}: ${kind}, max ${format(max)}`;
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", d);
  svg.append(title, path);
  let last = null;
  for (let i = values.length - 1; i >= 0; i--) {
    if (values[i] !== null) { last = values[i]; break; }
  }
  return el("span", { class: `chart ${kind}`, "data-route": route, "data-kind": kind },
    svg, el("span", { class: "value" }, last === null ? "–" : format(last)));
}

const perSecond = (v) => `${v.toFixed(v < 10 ? 1 : 0)}/s`;
const millis = (v) => (v < 1 ? `${(v * 1000).toFixed(0)} µs` : `${v.toFixed(v < 10 ? 1 : 0)} ms`);

function renderRoutes(state) {
  const series = new Map(state.live.routes.map((r) => [r.route, r]));
  const rows = state.routes.map((route) => {
    const live = series.get(route.name) || { requests: [], errors: [], p99_ms: [] };
    const match = Object.entries(route.match).map(([k, v]) => `${k} ${v}`).join("");
    const methods = route.methods.length ? ` (${route.methods.join(", ")})` : "";
    const services = route.answers_itself
      ? el("span", { class: "muted" }, "answers itself")
      : route.services.map((s) => (route.services.length > 1 ? `${s.name} (${s.weight})` : s.name)).join(", ");
    return el("tr", { "data-route": route.name },
      el("td", {}, el("strong", {}, route.name)),
      el("td", { class: "mono" }, match + methods),
      el("td", {}, services),
      el("td", {}, route.plugins.join(", ") || el("span", { class: "muted" }, "–")),
      el("td", {}, sparkline(live.requests, "rate", perSecond, route.name)),
      el("td", {}, sparkline(live.errors, "errors", perSecond, route.name)),
      el("td", {}, sparkline(live.p99_ms, "p99", millis, route.name)));
  });
  document.querySelector("#routes tbody").replaceChildren(...rows);
}

function healthCell(instance) {
  if (instance.drained) return el("span", { class: "warn" }, "drained");
  if (instance.ejected) return el("span", { class: "bad" }, "ejected");
  if (!instance.healthy) {
    return el("span", { class: "bad", title: instance.active_check_failure || "" }, "unhealthy");
  }
  return el("span", { class: "ok" }, "healthy");
}

function renderServices(state) {
  const blocks = state.services.map((service) => {
    const breaker = service.breaker === null ? el("span", { class: "muted" }, "none")
      : el("span", { class: service.breaker === "closed" ? "ok" : "bad" }, service.breaker);
    const rows = service.instances.map((i) =>
      el("tr", { "data-instance": i.address },
        el("td", { class: "mono" }, i.address),
        el("td", { class: "mono" }, i.id === i.address ? "" : i.id),
        el("td", {}, healthCell(i)),
        el("td", {}, i.weight),
        el("td", {}, i.in_flight),
        el("td", {}, i.lease_age_seconds === null ? "–" : `${i.lease_age_seconds.toFixed(0)} s`)));
    const table = rows.length
      ? el("table", {},
        el("thead", {}, el("tr", {}, ...["Instance", "Id", "Health", "Weight", "In flight", "Lease age"]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows))
      : el("p", { class: "bad" }, "no instances");
    return el("div", { class: "service", "data-service": service.name },
      el("h3", {}, service.name, " ",
        el("span", { class: "muted" }, `${service.discovery}, ${service.balance}, breaker `), breaker),
      table);
  });
  document.getElementById("services").replaceChildren(...blocks);
}

function renderPlugins(state) {
  const plugins = state.plugins.plugins || [];
  const rows = plugins.map((p) =>
    el("tr", { "data-plugin": p.name },
      el("td", {}, el("strong", {}, p.name)),
      el("td", {}, el("span", { class: p.status === "loaded" ? "ok" : "bad" }, p.status)),
      el("td", { class: "mono", title: p.hash || "" }, p.hash ? p.hash.slice(0, 16) : "–"),
      el("td", {}, p.loaded_at || "–"),
      el("td", { class: p.last_error ? "bad" : "muted" }, p.last_error || "–")));
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted" },
      state.plugins.enabled ? "no plugin loaded" : "plugins are off (no route uses one)")));
  }
  document.querySelector("#plugins tbody").replaceChildren(...rows);
}

async function refresh() {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let response;
  try {
    response = await fetch(STATE_URL, { headers, cache: "no-store" });
  } catch (e) {
    setStatus(`cannot reach the admin API (${e.message}); showing the last figures`, true);
    return;
  }
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    setStatus(t ? "the admin token was refused: enter it again" : "the admin API needs a token", true);
    return;
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).message || detail; } catch (_) { /* not JSON */ }
    setStatus(`the admin API answered ${response.status}: ${detail}`, true);
    return;
  }
  const state = await response.json();
  document.getElementById("token-form").hidden = true;
  renderRoutes(state);
  renderServices(state);
  renderPlugins(state);
  setStatus(`updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`, false);
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    document.getElementById("token").value = "";
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
