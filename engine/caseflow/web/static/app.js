// caseflow's status page: keeps the numbers, the diagram and the tables current without a
// reload, by asking the page's own JSON endpoints once a second. Everything the server
// sends is put into the page as text (textContent), never as markup. Without this script
// the pages still work: they show what was true when they were loaded.
"use strict";

(function () {
  const INTERVAL_MS = 1000;
  const body = document.body;
  const kind = body.dataset.page;

  // The same rule as caseflow's command line (views.printable): characters Python does not
  // call printable (Unicode's Other and Separator categories, except the space) are shown
  // as escapes, so that a name with a newline or a tab shows as `new\nline`.
  const NONPRINTABLE = /[\p{C}\p{Z}]/gu;
  const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
  function printable(s) {
    return s.replace(NONPRINTABLE, (c) => {
      if (c === " ") return c;
      if (NAMED[c]) return NAMED[c];
      const n = c.codePointAt(0);
      if (n < 0x100) return "\\x" + n.toString(16).padStart(2, "0");
      if (n < 0x10000) return "\\u" + n.toString(16).padStart(4, "0");
      return "\\U" + n.toString(16).padStart(8, "0");
    });
  }
  function show(v) {
    return v === null || v === undefined ? "–" : printable(String(v));
  }
  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 90) return s + " s";
    if (s < 90 * 60) return Math.floor(s / 60) + " min";
    if (s < 48 * 3600) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  const JOB_TIMES = { // as pages.JOB_TIMES
    queue: "as its queue reported them",
    observed: "as caseflow's polls saw them",
    unknown: "not known: the case is from an older caseflow",
  };
  function seconds(value) { // as pages.seconds: tenths of a second below 90 s
    if (value === null || value === undefined) return "–";
    return value < 90 ? value.toFixed(1) + " s" : age(value);
  }
  function size(n) {
    if (n === null || n === undefined) return "–";
    for (const [unit, f] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
      if (n >= f) return (n / f).toFixed(1) + " " + unit;
    }
    return n + " B";
  }
  function setText(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function caseLink(id, text) {
    const a = el("a", text);
    a.href = "/cases/" + Number(id);
    return a;
  }
  function plural(n, word) {
    return n.toLocaleString("en") + " " + word + (n === 1 ? "" : "s"); // as caseflow.text
  }
  function stateText(c) {
    return c.state_text || c.state; // the server's words, as `caseflow status` says them
  }
  function reasonText(c) {
    if (c.reason) return c.reason;
    if (c.last_error)
      return "retrying since " + c.failing_since + " (" + plural(c.attempts, "attempt") + "): " +
        c.last_error;
    return null;
  }

  function caseRow(c, now) {
    const tr = el("tr");
    tr.dataset.id = String(Number(c.id));
    const id = el("td");
    id.appendChild(caseLink(c.id, String(Number(c.id))));
    const name = el("td", undefined, "name");
    name.appendChild(caseLink(c.id, show(c.name)));
    const slot = c.slot === null ? "–" : c.slot + (c.device ? " (device " + show(c.device) + ")" : "");
    tr.append(id, name, el("td", show(stateText(c)), "state s-" + c.state.replace(/[^a-z_]/g, "")),
      el("td", show(c.group)), el("td", show(c.host)), el("td", slot),
      el("td", age((now - Date.parse(c.created_at)) / 1000), "age"),
      el("td", c.durations.total === null ? "–" : age(c.durations.total), "time"),
      el("td", show(reasonText(c)), "reason"));
    return tr;
  }
  function fillCases(table, cases, now) {
    const tbody = table.tBodies[0];
    const rows = cases.map((c) => caseRow(c, now));
    if (!rows.length) {
      const tr = el("tr", undefined, "empty");
      const td = el("td", "no cases");
      td.colSpan = 9;
      tr.appendChild(td);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  // -- the pages ----------------------------------------------------------------------
  async function overview() {
    const s = await getJSON("/api/summary");
    let active = 0;
    for (const [state, n] of Object.entries(s.states)) {
      setText(document.getElementById("count-" + state), String(n));
      setText(document.getElementById("n-" + state), String(n));
      const g = document.getElementById("state-" + state);
      if (g) g.classList.toggle("busy", n > 0);
      if (!(g && g.classList.contains("terminal"))) active += n;
    }
    setText(document.getElementById("summary"), plural(s.total, "case") + ", " + active + " active.");
    const alerts = document.getElementById("alerts");
    if (alerts) {
      const items = [];
      for (const h of s.hosts) {
        if (h.problem) items.push(el("li", "host " + show(h.name) + ": " + show(h.problem_line)));
        if (h.notice) items.push(el("li", "host " + show(h.name) + ": " + show(h.notice)));
        if (h.drain) items.push(el("li", "host " + show(h.name) + ": " + show(h.drain)));
      }
      alerts.replaceChildren(...items);
    }
    const recent = document.getElementById("recent");
    if (recent) {
      const page = await getJSON("/api/cases?order=active&per_page=20");
      fillCases(recent, page.cases, Date.parse(s.at));
    }
    return s.at;
  }

  async function cases() {
    const q = document.getElementById("cases-query");
    const params = new URLSearchParams();
    if (q.dataset.state) params.set("state", q.dataset.state);
    if (q.dataset.q) params.set("q", q.dataset.q);
    params.set("page", q.dataset.page);
    params.set("per_page", q.dataset.perPage);
    const page = await getJSON("/api/cases?" + params.toString());
    fillCases(document.getElementById("cases"), page.cases, Date.now());
    for (const info of document.querySelectorAll("#pageinfo"))
      setText(info, "page " + page.page + " of " + page.pages + ", " + page.total + " case" + (page.total === 1 ? "" : "s"));
    return null;
  }

  async function oneCase() {
    const box = document.getElementById("case");
    const c = await getJSON("/api/cases/" + Number(box.dataset.id));
    setText(box.querySelector('[data-field="state"]'), show(stateText(c)));
    setText(box.querySelector('[data-field="reason"]'), show(reasonText(c)));
    const history = document.getElementById("history");
    if (history.children.length !== c.history.length) {
      history.replaceChildren(...c.history.map((h) => {
        const li = el("li");
        const at = el("time", show(h.at), "at");
        at.dateTime = h.at || "";
        li.append(at, " ", el("span", show(h.from === null ? "(new)" : h.from) + " → " + show(h.to), "move"),
          " ", el("b", show(h.trigger), "trigger"));
        if (h.detail) li.append(" ", el("span", show(h.detail), "detail"));
        return li;
      }));
    }
    for (const cell of box.querySelectorAll("[data-phase]"))
      setText(cell, seconds(c.durations[cell.dataset.phase]));
    setText(document.getElementById("job-started"), show(c.job_times.started));
    setText(document.getElementById("job-ended"), show(c.job_times.ended));
    setText(document.getElementById("job-times-source"), show(JOB_TIMES[c.job_times.source]));
    const up = c.upload;
    const text = document.getElementById("upload-text");
    if (up && text) {
      const bar = document.querySelector("#upload progress");
      bar.max = up.total;
      bar.value = up.bytes;
      setText(text, size(up.bytes) + " of " + size(up.total) + " (" + up.percent + " %), " +
        (up.rate_bytes_per_second ? size(up.rate_bytes_per_second) + "/s" : "–") + ", " +
        (up.seconds_left === null ? "–" : age(up.seconds_left)) + " left");
    }
    // the job's last lines: read on its host while it runs (the server reads there at most
    // once every few seconds per case, however many pages ask), else the log kept at its end
    const log = await getJSON("/api/cases/" + Number(box.dataset.id) + "/log");
    const section = document.getElementById("log");
    if (section) {
      section.dataset.live = String(Boolean(log.live));
      setText(document.getElementById("log-about"), printable(String(log.about)));
      const pre = document.getElementById("log-text");
      // (the lines come with their control characters as escapes: shown as they are)
      setText(pre, log.lines.join("\n"));
      pre.hidden = log.lines.length === 0;
    }
    return null;
  }

  function cells(values) {
    const tr = el("tr");
    for (const [v, cls] of values) tr.appendChild(el("td", v, cls));
    return tr;
  }
  async function hosts() {
    const h = await getJSON("/api/hosts");
    document.querySelector("#hosts tbody").replaceChildren(...h.hosts.map((x) => {
      const tr = cells([[show(x.transport) + " / " + show(x.backend)],
        [show(x.status), "host-" + x.status.replace(/[^a-z]/g, "")], [show(x.since)],
        [show([x.problem, x.notice, x.drain].filter((t) => t).join(" · ") || null)]]);
      const th = el("th", show(x.name));
      th.scope = "row";
      tr.prepend(th);
      return tr;
    }));
    document.querySelector("#groups tbody").replaceChildren(...h.groups.map((g) => cells(
      [[show(g.host)], [show(g.group)], [String(g.in_use), "num"], [String(g.free), "num"],
       [String(g.slots), "num"]])));
    document.querySelector("#slots tbody").replaceChildren(...h.slots.map((s) => {
      const tr = cells([[show(s.host)], [show(s.group)], [String(s.slot), "num"],
        [show(s.device)], [s.case_id === null ? "free" : ""], [show(s.case_state)],
        [s.retired ? "retired" : ""]]);
      if (s.case_id !== null)
        tr.children[4].appendChild(caseLink(s.case_id, s.case_id + " " + show(s.case_name)));
      return tr;
    }));
    return null;
  }

  const refresh = { overview: overview, cases: cases, case: oneCase, hosts: hosts }[kind];
  if (!refresh) return;
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");

  async function loop() {
    if (!document.hidden) {
      try {
        const at = await refresh();
        setText(updated, at || new Date().toISOString().replace(/\.\d+Z$/, "Z"));
        setText(live, "· live");
        live.hidden = false;
        live.classList.remove("offline");
      } catch (e) {
        setText(live, "· not updating (" + e.message + ")");
        live.hidden = false;
        live.classList.add("offline");
      }
    }
    setTimeout(loop, INTERVAL_MS);
  }
  loop();
})();
