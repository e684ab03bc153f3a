"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const nameInput = $("f-name"), idInput = $("f-distinct-id"), limitInput = $("f-limit"), live = $("live");
  const query = new URLSearchParams(location.search);
  nameInput.value = query.get("name") || "";
  idInput.value = query.get("distinct_id") || "";
  if (["50", "100", "500", "1000"].includes(query.get("limit"))) limitInput.value = query.get("limit");
  let shown = { events: "", rejected: "", limited: "", people: "", sessions: "" };
  let timer = null;

  function node(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }
  function cell(row, cls, child) {
    const td = node("td", cls);
    if (child !== undefined) td.append(child);
    row.append(td);
    return td;
  }
  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }
  function localTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function filterParams() {
    const p = new URLSearchParams();
    if (nameInput.value) p.set("name", nameInput.value);
    if (idInput.value) p.set("distinct_id", idInput.value);
    if (limitInput.value !== "100") p.set("limit", limitInput.value);
    return p;
  }
  function filterLink(key, value) {
    const a = node("a", "filter", value);
    const p = filterParams();
    p.set(key, value);
    a.href = "?" + p.toString();
    a.addEventListener("click", (e) => {
      e.preventDefault();
      (key === "name" ? nameInput : idInput).value = value;
      apply();
    });
    return a;
  }
  function apply() {
    const p = filterParams().toString();
    history.replaceState(null, "", p ? "?" + p : location.pathname);
    shown.events = "";
    refresh();
  }
  async function getJSON(path, params) {
    const qs = params && params.toString();
    const response = await fetch(qs ? path + "?" + qs : path, { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  function renderEvents(data) {
    const top = data.events.length ? data.events[0].seq : 0;
    const key = [data.total, data.matching, top, data.events.length, data.duplicatesIgnored].join("|");
    if (key === shown.events) return;
    shown.events = key;
    const filters = [];
    if (nameInput.value) filters.push("name = " + JSON.stringify(nameInput.value));
    if (idInput.value) filters.push("distinct_id = " + JSON.stringify(idInput.value));
    $("filter-summary").textContent = filters.length ? "Filtered by " + filters.join(" and ") : "";
    let count = filters.length
      ? data.matching + " matching of " + data.total + " events"
      : data.total + " events";
    if (data.events.length < data.matching) count += ", newest " + data.events.length + " shown";
    if (data.dedupe) count += " · " + data.duplicatesIgnored + " duplicate requests ignored";
    $("count").textContent = "(" + count + ")";
    $("count").dataset.matching = String(data.matching);
    const rows = document.createDocumentFragment();
    for (const ev of data.events) {
      const tr = node("tr", "event");
      tr.dataset.seq = String(ev.seq);
      cell(tr, "received mono", localTime(ev.receivedAt));
      cell(tr, "name", filterLink("name", ev.name));
      const who = typeof ev.distinctId === "string";
      cell(tr, "distinct-id", who ? filterLink("distinct_id", ev.distinctId) : node("span", "empty", "none"));
      const when = typeof ev.timestamp === "string";
      cell(tr, "timestamp mono", when ? ev.timestamp : node("span", "empty", "receive time"));
      const hasProps = ev.properties !== null && ev.properties !== undefined;
      const props = cell(tr, "properties", node("pre", "", hasProps ? pretty(ev.properties) : "(none)"));
      if (Object.keys(ev.otherFields).length) props.append(node("pre", "muted", pretty(ev.otherFields)));
      cell(tr, "idempotency-key mono", ev.idempotencyKey || "");
      rows.append(tr);
    }
    $("events-body").replaceChildren(rows);
    $("events-empty").hidden = data.events.length > 0;
    if (!data.events.length && data.total) $("events-empty").textContent = "No event matches the filters.";
  }

  function renderRejected(data) {
    const key = [data.total, data.rejected.length ? data.rejected[0].seq : 0].join("|");
    if (key === shown.rejected) return;
    shown.rejected = key;
    $("rejected-count").textContent = "(" + data.total + ")";
    $("rejected-list").replaceChildren(requestList(data.rejected));
  }

  function renderLimited(status, data) {
    const key = [status.rateLimited, data.rejected.length ? data.rejected[0].seq : 0].join("|");
    if (key === shown.limited) return;
    shown.limited = key;
    const count = $("rate-limited-count");
    count.textContent = "(" + status.rateLimited + " since the server started"
      + (data.rejected.length ? ", latest " + data.rejected.length + " below" : "") + ")";
    count.dataset.count = String(status.rateLimited);
    const limits = status.rateLimits || {};
    const per = status.rateLimitWindow === 60 ? "a minute" : "per " + status.rateLimitWindow + " s";
    $("limits-info").textContent = Object.keys(limits).length
      ? "Limits in effect, per project: batch " + limits.batch + " requests " + per + ", events "
        + limits.events + ". Over a limit the answer is 429 with Retry-After; over the monthly quota, "
        + "429 without. The real Serla server answers the same way."
      : "Rate limits are off (--no-rate-limits); the real Serla server allows 100 batch requests a minute.";
    $("rate-limited-list").replaceChildren(requestList(data.rejected));
  }

  function requestList(requests) {
    const list = document.createDocumentFragment();
    for (const r of requests) {
      const article = node("article", "rejected");
      const head = node("div");
      const target = r.method + " " + r.path + (r.query ? "?" + r.query : "");
      head.append(node("span", "status-code", r.status), node("code", "", target));
      head.append(" ", node("span", "muted", localTime(r.receivedAt)));
      if (r.error) head.append(" ", node("strong", "error", r.error));
      article.append(head);
      if (r.details.length) {
        const ul = node("ul", "issues");
        for (const issue of r.details) {
          const li = node("li");
          const path = Array.isArray(issue.path) ? issue.path.join(".") : "";
          li.append(node("code", "", path || "(body)"), " ", node("span", "", issue.message));
          ul.append(li);
        }
        article.append(ul);
      }
      const response = node("details");
      const answer = typeof r.response === "string" ? r.response : pretty(r.response);
      response.append(node("summary", "", "Response"), node("pre", "", answer));
      let body = r.body;
      try { body = pretty(JSON.parse(r.body)); } catch (e) { /* not JSON: show it as text */ }
      const request = node("details");
      const size = r.bodySize + " bytes" + (r.bodyTruncated ? ", truncated" : "");
      request.append(node("summary", "", "Request body (" + size + ")"), node("pre", "", body));
      article.append(response, request);
      list.append(article);
    }
    if (!requests.length) list.append(node("p", "empty", "None."));
    return list;
  }

  function renderPeople(data) {
    const key = [data.total, data.identities.map((p) => p.updatedAt + p.distinctId).join(",")].join("|");
    if (key === shown.people) return;
    shown.people = key;
    $("people-count").textContent = "(" + data.total + ")";
    const rows = document.createDocumentFragment();
    for (const person of data.identities) {
      const tr = node("tr", "person");
      cell(tr, "distinct-id", filterLink("distinct_id", person.distinctId));
      cell(tr, "properties", node("pre", "", pretty(person.properties)));
      cell(tr, "mono", localTime(person.updatedAt));
      rows.append(tr);
    }
    $("people-body").replaceChildren(rows);
  }

  function renderSessions(data) {
    const key = JSON.stringify(data);
    if (key === shown.sessions) return;
    shown.sessions = key;
    $("sessions-count").textContent = "(" + data.sessions.length + ")";
    $("groups-count").textContent = "(" + data.groups.length + ")";
    $("without-session").textContent = data.withoutSession
      ? data.withoutSession + " of the last " + data.scanned + " events came without one (one session each)."
      : "";
    const rows = document.createDocumentFragment();
    for (const s of data.sessions) {
      const tr = node("tr", "session");
      cell(tr, "mono", node("span", "", s.sessionId));
      cell(tr, "distinct-id", node("span", "", s.distinctIds.join(", ")));
      cell(tr, "mono", node("span", "", String(s.events)));
      cell(tr, "", node("span", "", s.names.join(" → ")));
      cell(tr, "properties", node("pre", "", pretty(s.groups)));
      cell(tr, "mono", localTime(s.lastReceivedAt));
      rows.append(tr);
    }
    $("sessions-body").replaceChildren(rows);
    const groups = document.createDocumentFragment();
    for (const g of data.groups) {
      const tr = node("tr", "group");
      cell(tr, "", node("span", "", g.type));
      cell(tr, "mono", node("span", "", g.id));
      cell(tr, "mono", node("span", "", String(g.events)));
      cell(tr, "distinct-id", node("span", "", g.distinctIds.join(", ")));
      cell(tr, "mono", localTime(g.lastReceivedAt));
      groups.append(tr);
    }
    $("groups-body").replaceChildren(groups);
  }

  async function refresh() {
    const params = filterParams();
    if (!params.has("limit")) params.set("limit", limitInput.value);
    try {
      const [events, rejected, people, status, limited, sessions] = await Promise.all([
        getJSON("/api/dev/events", params),
        getJSON("/api/dev/rejected", new URLSearchParams({ limit: "50" })),
        getJSON("/api/dev/identities", new URLSearchParams({ limit: "100" })),
        getJSON("/api/dev/status"),
        getJSON("/api/dev/rejected", new URLSearchParams({ limit: "10", status: "429" })),
        getJSON("/api/dev/sessions", new URLSearchParams({ limit: "50" })),
      ]);
      renderEvents(events);
      renderRejected(rejected);
      renderLimited(status, limited);
      renderSessions(sessions);
      renderPeople(people);
      $("status").className = "up";
      const mode = live.checked ? "live" : "paused";
      $("status").textContent = mode + " · updated " + new Date().toLocaleTimeString();
      document.body.dataset.state = "ready";
    } catch (error) {
      $("status").className = "down";
      $("status").textContent = "server unreachable, retrying (" + error.message + ")";
    }
  }
  function schedule() {
    clearTimeout(timer);
    if (live.checked) timer = setTimeout(async () => { await refresh(); schedule(); }, 1000);
  }

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  limitInput.addEventListener("change", apply);
  $("reset").addEventListener("click", () => { nameInput.value = ""; idInput.value = ""; apply(); });
  live.addEventListener("change", () => { refresh(); schedule(); });
  $("clear").addEventListener("click", async () => {
    if (!confirm("Delete every stored event, person and rejected request?")) return;
    await fetch("/api/dev/clear", { method: "POST", headers: { "X-Serla-Dev": "clear" } });
    shown = { events: "", rejected: "", limited: "", people: "", sessions: "" };
    refresh();
  });
  refresh().then(schedule);
})();
