// caseflow's status page: keeps the numbers, the diagram and the tables current without a
// reload, by asking the page's own JSON endpoints once a second. Everything the server
// sends is put into the page as text (textContent), never as markup. Without this script
// the pages still work: they show what was true when they were loaded.
//
// Times: the server writes each as <time datetime="ISO 8601 UTC" title="the same">, its text
// in the daemon's zone; this script writes them in the browser's zone, in the same form
// (web.pages.local_time), at load, every second, and in everything it rebuilds.
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
  // as views.one_line: runs of white space one space, a long text cut, saying so
  function oneLine(v, width) {
    if (v === null || v === undefined) return "–";
    const flat = printable(String(v).replace(/\s+/g, " ").trim());
    return flat.length <= width ? flat : flat.slice(0, width - 1).trimEnd() + "…";
  }

  // -- times: in the browser's zone, as web.pages.local_time writes them ---------------
  const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
    "Dec"];
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
  function two(n) {
    return String(n).padStart(2, "0");
  }
  function localTime(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return show(iso);
    const now = new Date();
    const clock = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return clock;
    return DAYS[d.getDay()] + " " + d.getDate() + " " + MONTHS[d.getMonth()] +
      (d.getFullYear() === now.getFullYear() ? "" : " " + d.getFullYear()) + " " + clock;
  }
  function timeEl(iso, fallback) {
    if (!iso) return fallback === undefined ? "–" : fallback;
    const t = el("time", localTime(iso));
    t.dateTime = iso;
    t.title = iso;
    return t;
  }
  function localizeTimes() {
    for (const t of document.querySelectorAll("time[datetime]")) {
      setText(t, localTime(t.dateTime));
      if (t.title !== t.dateTime) t.title = t.dateTime;
    }
  }
  // a text made of strings and <time> elements, put in `box` when it says something new
  function setParts(box, parts) {
    if (!box) return;
    const key = parts.map((p) => typeof p === "string" ? p : "\u0000" + p.dateTime).join("");
    if (box.dataset.parts === key) return;
    box.dataset.parts = key;
    box.replaceChildren(...parts);
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
  function reasonParts(c) { // as views.reason_parts
    if (c.reason) return [show(c.reason)];
    if (c.last_error)
      return ["retrying since ", timeEl(c.failing_since, "unknown"),
        show(" (" + plural(c.attempts, "attempt") + "): " + c.last_error)];
    return ["–"];
  }

  function caseRow(c, now) {
    const tr = el("tr");
    tr.dataset.id = String(Number(c.id));
    const id = el("td");
    id.appendChild(caseLink(c.id, String(Number(c.id))));
    const name = el("td", undefined, "name");
    name.appendChild(caseLink(c.id, show(c.name)));
    name.title = show(c.name);
    const slot = c.slot === null ? "–" : c.slot + (c.device ? " (device " + show(c.device) + ")" : "");
    const state = el("td", show(stateText(c)), "state s-" + c.state.replace(/[^a-z_]/g, ""));
    state.title = state.textContent; // (the whole text where a compact table cuts it)
    const reason = el("td", undefined, "reason");
    reason.title = printable(c.reason || c.last_error || "");
    reason.append(...reasonParts(c));
    tr.append(id, name, state, el("td", show(c.group)), el("td", show(c.host)), el("td", slot),
      el("td", age((now - Date.parse(c.created_at)) / 1000), "age"),
      el("td", c.durations.total === null ? "–" : age(c.durations.total), "time"), reason);
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
  function li(parts, title) {
    const item = el("li");
    item.append(...parts);
    if (title !== undefined) item.title = title;
    return item;
  }
  // a host's problem and its drain, as views.host_problem_parts and views.drain_parts say them
  function problemParts(h) {
    return [show(h.problem_head) + " since ", timeEl(h.since, "unknown"),
      ": " + oneLine(h.problem, 10000)];
  }
  function drainParts(h) {
    return ["DRAINED since ", timeEl(h.drain_since, "unknown"), " (" + oneLine(h.drain_reason, 1000) +
      "): no new upload or submit, running jobs go on; `caseflow host resume " + show(h.name) +
      "` ends it"];
  }
  // the banner: every host with a problem, a notice or a drain (as web.pages.host_banner)
  function hostLines(hosts) {
    const items = [];
    for (const h of hosts) {
      const name = "host " + show(h.name) + ": ";
      if (h.problem) items.push(li([name, ...problemParts(h)]));
      if (h.notice) items.push(li([name + show(h.notice)]));
      if (h.drain) items.push(li([name, ...drainParts(h)]));
    }
    return items;
  }
  // what needs a person (as web.overview.attention_html)
  function attnItem(c, what, title) {
    const span = el("span", undefined, "what");
    span.append(...what);
    return li([caseLink(c.id, Number(c.id) + " " + show(c.name)), " ", span],
      title ? printable(title) : "");
  }
  function attnSection(key, total, items, count) {
    const box = document.getElementById("attn-" + key);
    if (!box) return;
    box.hidden = total === 0;
    const n = box.querySelector(".n");
    if (Array.isArray(count)) n.replaceChildren(...count);
    else setText(n, String(count));
    box.querySelector("ul").replaceChildren(...items);
    const more = box.querySelector(".more");
    setText(more, "and " + (total - items.length) + " more");
    more.hidden = items.length >= total;
  }
  function fillAttention(a, hosts, now) {
    const lines = hostLines(hosts);
    document.getElementById("alerts").replaceChildren(...lines);
    const links = [];
    for (const [state, n] of Object.entries(a.failed.states)) {
      if (!n) continue;
      if (links.length) links.push(", ");
      const link = el("a", n + " " + show(state));
      link.href = "/cases?state=" + encodeURIComponent(state);
      links.push(link);
    }
    // (what went wrong first: the end of a long line is cut)
    attnSection("failed", a.failed.total, a.failed.cases.map((c) => attnItem(c,
      [show(c.reason) + " (" + show(c.state) + ", ", timeEl(c.updated_at), ")"], c.reason)), links);
    attnSection("retrying", a.retrying.total, a.retrying.cases.map((c) => attnItem(c,
      [show(c.last_error) + " (" + show(c.state) + ", " + plural(c.attempts, "attempt") + " since ",
        timeEl(c.failing_since), ")"], c.last_error)), a.retrying.total);
    attnSection("waiting", a.waiting.total, a.waiting.cases.map((c) => attnItem(c,
      [show(stateText(c))], stateText(c))), a.waiting.total);
    attnSection("stuck", a.stuck.total, a.stuck.cases.map((c) => attnItem(c,
      [show(c.state) + " since ", timeEl(c.updated_at),
        " (" + age((now - Date.parse(c.updated_at)) / 1000) + ")"], stateText(c))), a.stuck.total);
    const quiet = !lines.length && !a.failed.total && !a.retrying.total && !a.waiting.total &&
      !a.stuck.total;
    document.getElementById("calm").hidden = !quiet;
  }

  async function overview() {
    const s = await getJSON("/api/summary");
    let active = 0;
    for (const [state, n] of Object.entries(s.states)) {
      setText(document.getElementById("count-" + state), String(n));
      const chip = document.getElementById("n-" + state);
      setText(chip, String(n));
      if (chip) chip.parentElement.classList.toggle("none", n === 0);
      const g = document.getElementById("state-" + state);
      if (g) g.classList.toggle("busy", n > 0);
      if (!(g && g.classList.contains("terminal"))) active += n;
    }
    setText(document.getElementById("summary"), plural(s.total, "case") + ", " + active + " active.");
    if (document.getElementById("attention")) fillAttention(s.attention, s.hosts, Date.parse(s.at));
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
    setParts(box.querySelector('[data-field="reason"]'), reasonParts(c));
    setParts(box.querySelector('[data-field="updated"]'), [timeEl(c.updated_at)]);
    // while it waits out a backoff after a failed attempt (as web.pages.next_attempt)
    const next = c.last_error && c.next_attempt_at && Date.parse(c.next_attempt_at) > Date.now();
    setParts(box.querySelector('[data-field="next"]'), [next ? timeEl(c.next_attempt_at) : "–"]);
    const history = document.getElementById("history");
    if (history.children.length !== c.history.length) {
      history.replaceChildren(...c.history.map((h) => {
        const li = el("li");
        const at = el("span", undefined, "at");
        at.append(timeEl(h.at));
        li.append(at, " ", el("span", show(h.from === null ? "(new)" : h.from) + " → " + show(h.to), "move"),
          " ", el("b", show(h.trigger), "trigger"));
        if (h.detail) li.append(" ", el("span", show(h.detail), "detail"));
        return li;
      }));
    }
    for (const cell of box.querySelectorAll("[data-phase]"))
      setText(cell, seconds(c.durations[cell.dataset.phase]));
    setParts(document.getElementById("job-started"), [timeEl(c.job_times.started)]);
    setParts(document.getElementById("job-ended"), [timeEl(c.job_times.ended)]);
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
      setParts(document.getElementById("log-about"), aboutParts(log));
      const pre = document.getElementById("log-text");
      // (the lines come with their control characters as escapes: shown as they are)
      setText(pre, log.lines.join("\n"));
      pre.hidden = log.lines.length === 0;
    }
    return null;
  }

  // what the page says above a job's lines: for a running job's, when they were read on the
  // host, as a <time> (the server writes `about` with that `read_at` after ", read at ")
  function aboutParts(log) {
    const about = String(log.about);
    const mark = log.read_at ? ", read at " + log.read_at : null;
    const i = mark ? about.indexOf(mark) : -1;
    if (i < 0) return [printable(about)];
    return [printable(about.slice(0, i)) + ", read at ", timeEl(log.read_at),
      printable(about.slice(i + mark.length))];
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
        [show(x.status), "host-" + x.status.replace(/[^a-z]/g, "")], [""], [""]]);
      tr.children[2].append(timeEl(x.since || x.drain_since));
      // (as web.pages.host_texts)
      const texts = [x.problem, x.notice].filter((t) => t).map((t) => [show(t)]);
      if (x.drain) texts.push(drainParts(x));
      tr.children[3].append(...(texts.length ? texts.flatMap((t, i) => i ? [" · ", ...t] : t) : ["–"]));
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

  const zone = document.getElementById("zone");
  if (zone && ZONE) {
    setText(zone, "times in " + ZONE);
    zone.title = "Your browser's time zone; point at a time to see it in UTC (ISO 8601)";
  }
  localizeTimes();
  const refresh = { overview: overview, cases: cases, case: oneCase, hosts: hosts }[kind];
  if (!refresh) return;
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");

  async function loop() {
    if (!document.hidden) {
      try {
        const at = await refresh();
        updated.dateTime = at || new Date().toISOString().replace(/\.\d+Z$/, "Z");
        localizeTimes(); // (also the ones written at load: "today" moves on at midnight)
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
