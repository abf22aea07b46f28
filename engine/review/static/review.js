// The review page. Every model text goes into the page as a text node (never as markup).
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const PAGE = 100;
const state = { offset: 0, total: 0, rows: [], current: -1, pair: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("show"), 4000);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "X-Review-Token": token, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function filters() {
  const params = new URLSearchParams();
  for (const field of document.getElementById("filters").elements) {
    if (field.name && field.value !== "") params.set(field.name, field.value);
  }
  return params;
}

function fmt(p) { return p === null || p === undefined ? "–" : Number(p).toFixed(3); }

function showCounts(counts) {
  document.getElementById("counts").textContent =
    `accepted ${counts.accept} · flipped ${counts.flip} · dropped ${counts.drop}`;
}

async function loadRun() {
  const run = await api("/api/run");
  document.getElementById("run").textContent = `${run.run}: ${run.pairs} pairs of ${run.rows} rows` +
    (run.judged ? "" : " (not judged)");
  showCounts(run.decisions);
  const form = document.getElementById("filters");
  document.getElementById("split-filter").hidden = !run.panel; // only a panel of judges can split
  for (const name of ["category", "principle", "status"]) {
    const select = form.elements[name];
    for (const [value, count] of Object.entries(run.facets[name])) {
      select.append(el("option", { value }, `${value || "(none)"} (${count})`));
    }
  }
}

async function loadList(keep) {
  const params = filters();
  params.set("offset", state.offset);
  params.set("limit", PAGE);
  const page = await api(`/api/pairs?${params}`);
  state.total = page.total;
  state.rows = page.rows;
  const list = document.getElementById("list");
  list.replaceChildren(...page.rows.map((row, i) => el("li", { "data-id": row.id, onclick: () => select(i) },
    el("div", { class: "meta" },
      el("span", {}, row.id),
      el("span", {}, row.category || "(none)"),
      el("span", {}, row.status),
      el("span", {}, `margin ${fmt(row.margin)}`),
      row.disagreed ? el("span", {}, "orders disagree") : null,
      row.split ? el("span", {}, "judges split") : null,
      row.unparsed ? el("span", {}, `${row.unparsed} unparsed`) : null,
      row.decision ? el("span", { class: `badge ${row.decision}` }, row.decision) : null,
      row.note ? el("span", {}, "✎") : null),
    el("div", { class: "snippet" }, row.snippet))));
  const end = Math.min(state.offset + page.rows.length, state.total);
  document.getElementById("range").textContent =
    state.total ? `${state.offset + 1}–${end} of ${state.total}` : "no pair matches";
  document.body.dataset.listReady = String(Date.now());
  if (!keep) state.current = -1;
  if (state.current >= state.rows.length) state.current = state.rows.length - 1;
  mark();
}

function mark() {
  document.querySelectorAll("#list li").forEach((li, i) => li.classList.toggle("current", i === state.current));
  const li = document.querySelectorAll("#list li")[state.current];
  if (li) li.scrollIntoView({ block: "nearest" });
}

async function select(i) {
  if (i < 0 || i >= state.rows.length) return;
  state.current = i;
  mark();
  try {
    const pair = await api(`/api/pairs/${encodeURIComponent(state.rows[i].id)}`);
    if (state.current !== i) return; // another pair was picked while this one loaded
    state.pair = pair;
    renderPair(pair);
  } catch (error) { toast(error.message); }
}

function diffNodes(ops) {
  return ops.map(([op, text]) => op === "=" ? document.createTextNode(text) : el(op === "+" ? "ins" : "del", {}, text));
}

function renderPair(p) {
  const d = p.decision;
  const flipped = d && d.action === "flip";
  const chosen = flipped ? p.rejected_from : p.chosen_from;
  const rejected = flipped ? p.chosen_from : p.rejected_from;
  const text = (name) => name === p.chosen_from ? p.texts.chosen : p.texts.rejected;
  const judge = p.judge;
  // A panel of judges: one column per judge with its own P(first better); the names are data, shown as text.
  const judges = judge ? [...new Set(judge.comparisons.flatMap((c) => Object.keys(c.by_judge || {})))] : [];
  const byJudge = (c, name) => c.by_judge && Object.prototype.hasOwnProperty.call(c.by_judge, name) ? c.by_judge[name] : null;
  const detail = document.getElementById("detail");
  detail.replaceChildren(...[
    el("h2", {}, `${p.id} · ${p.category || "(no category)"} · judge: ${p.status}` +
      (p.margin === null ? "" : ` (margin ${fmt(p.margin)})`)),
    el("h2", {}, "Conversation"),
    p.prompt.map((m) => el("div", { class: "turn" }, el("span", { class: "role" }, m.role), m.content)),
    el("h2", {}, "Answer, critiques and revisions"),
    p.story.map((s) => el("div", { class: `step ${s.kind}`, "data-name": s.name },
      el("span", { class: "what" }, s.kind === "critique" ? `${s.name} under ${s.principle}${s.stopped ? " (nothing to change)" : ""}` :
        s.kind === "revision" ? `${s.name} (diff against the version before${s.changed ? "" : ", unchanged"})` : "first answer"),
      s.diff ? diffNodes(s.diff) : s.text)),
    el("h2", {}, d && d.action ? `The pair (a person ${d.action === "accept" ? "accepted" : d.action === "flip" ? "flipped" : "dropped"} it)` :
      "The pair (as the judge ordered it)"),
    el("div", { class: "pair" },
      el("div", { class: "side chosen", id: "chosen" }, el("span", { class: "what" }, `chosen: ${chosen}`), text(chosen)),
      el("div", { class: "side rejected", id: "rejected" }, el("span", { class: "what" }, `rejected: ${rejected}`), text(rejected))),
    el("div", { id: "explain-bar" },
      el("button", { type: "button", id: "explain", onclick: () => explainPair(p, chosen, rejected) }, "Explain the judge's decision"),
      el("span", { id: "explain-result", "aria-live": "polite" })),
    judge ? [el("h2", {}, `${judges.length ? "Judges" : "Judge"} ${judge.model}: P(chosen better) = ${fmt(judge.chosen_prob)}`),
      el("table", { id: "judge" },
        el("tr", {}, ["pair", "P(first better)", "shown first", "shown second", "principles", "orders disagree", "unparsed"].map((h) => el("th", {}, h)),
          judges.length ? el("th", {}, "judges split") : null,
          judges.map((name) => el("th", { class: "judge-name", "data-judge": name }, `P(first better) by ${name}`))),
        judge.comparisons.map((c) => el("tr", {},
          el("td", {}, `${c.first} vs ${c.second}`), el("td", {}, fmt(c.p_first)),
          el("td", {}, fmt(c.p_first_shown_first)), el("td", {}, fmt(c.p_first_shown_second)),
          el("td", {}, c.principles.join(", ")), el("td", {}, c.disagreed ? "yes" : "no"), el("td", {}, c.unparsed),
          judges.length ? el("td", { class: "split" }, c.split ? "yes" : "no") : null,
          judges.map((name) => el("td", { class: "by-judge", "data-judge": name }, fmt(byJudge(c, name)))))))]
      : el("p", { class: "empty" }, "This run is not judged: the pair is the last revision over the first answer."),
    el("div", { id: "actions" },
      el("button", { type: "button", id: "accept", onclick: () => decide("accept") }, "Accept (a)"),
      el("button", { type: "button", id: "flip", onclick: () => decide("flip") }, "Flip (f)"),
      el("button", { type: "button", id: "drop", onclick: () => decide("drop") }, "Drop (d)"),
      el("button", { type: "button", id: "clear", onclick: () => decide("clear") }, "Undo (u)"),
      el("span", {}, d && d.action ? `decided: ${d.action} (${d.at})` : "not reviewed"),
      el("textarea", { id: "note", placeholder: "note (n to focus, Ctrl+Enter to save)", maxlength: "10000" }, d ? d.note : ""),
      el("button", { type: "button", id: "save-note", onclick: () => decide("note") }, "Save note"))].flat());
}

// How strongly a sentence pushed (log-odds): the tint classes of review.css.
function pushClass(push, signal) {
  if (!signal || push === null || Math.abs(push) < 1e-3) return "push push-none";
  const size = Math.abs(push) >= 1 ? 3 : Math.abs(push) >= 0.3 ? 2 : 1;
  return `push push-${push > 0 ? "for" : "against"}-${size}`;
}

// Ask the server which sentences moved the run's judge, then tint each side's sentences by their push
// toward the judge's chosen response. Sentences are text nodes in spans, never markup.
async function explainPair(p, shownChosen, shownRejected) {
  const button = document.getElementById("explain");
  const out = document.getElementById("explain-result");
  button.disabled = true;
  out.textContent = "asking the judge…";
  try {
    const a = await api(`/api/pairs/${encodeURIComponent(p.id)}/explain`);
    if (state.pair !== p) return; // another pair is shown now
    const sides = { [a.chosen_from]: "first", [a.rejected_from]: "second" };
    for (const [id, name] of [["chosen", shownChosen], ["rejected", shownRejected]]) {
      const box = document.getElementById(id);
      const side = sides[name];
      const body = a.texts[side];
      const spans = a.sentences.filter((s) => s.side === side).map((s) => el("span", {
        class: pushClass(s.push, a.signal), "data-push": s.push === null ? "" : s.push.toFixed(3),
        title: s.push === null ? "unread" : `push ${s.push >= 0 ? "+" : ""}${s.push.toFixed(3)} toward ${a.chosen_from}`,
      }, body.slice(s.start, s.end)));
      box.replaceChildren(box.querySelector(".what"), ...spans);
    }
    out.textContent = `P(${a.chosen_from} better) = ${fmt(a.p_first)}; green pushed the judge toward ${a.chosen_from}, ` +
      `red toward ${a.rejected_from} (${a.variants} variants scored). ${a.verdict}`;
    document.body.dataset.explained = p.id;
  } catch (error) { out.textContent = ""; toast(error.message); }
  finally { button.disabled = false; }
}

async function decide(action) {
  const p = state.pair;
  if (!p) return;
  const body = { action, revision: p.decision ? p.decision.revision : 0 };
  const note = document.getElementById("note");
  if (note && (action === "note" || note.value !== (p.decision ? p.decision.note : ""))) body.note = note.value;
  try {
    const result = await api(`/api/pairs/${encodeURIComponent(p.id)}/decision`, { method: "POST", body: JSON.stringify(body) });
    showCounts(result.counts);
    p.decision = result.decision; // keys pressed before the next pair loads act on this state, not a stale one
    const row = state.rows[state.current];
    if (row && row.id === p.id) { row.decision = result.decision.action; row.note = Boolean(result.decision.note); }
    const i = state.current;
    await loadList(true);
    if (action === "note" || action === "clear") await select(Math.min(i, state.rows.length - 1));
    else await select(state.rows[i] && state.rows[i].id === p.id ? i + 1 : i);
  } catch (error) { toast(error.message); }
}

let typing = null;
document.addEventListener("DOMContentLoaded", async () => {
  if (!token) { toast("missing token: open the URL that cai review printed"); return; }
  const form = document.getElementById("filters");
  form.addEventListener("change", () => { state.offset = 0; loadList(false).catch((e) => toast(e.message)); });
  form.addEventListener("input", (event) => {
    if (event.target.name !== "q") return;
    clearTimeout(typing);
    typing = setTimeout(() => { state.offset = 0; loadList(false).catch((e) => toast(e.message)); }, 250);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("prev-page").addEventListener("click", () => page(-1));
  document.getElementById("next-page").addEventListener("click", () => page(1));
  try { await loadRun(); await loadList(false); } catch (error) { toast(error.message); }
});

async function page(step) {
  const next = state.offset + step * PAGE;
  if (next < 0 || next >= state.total) return;
  state.offset = next;
  await loadList(false);
  await select(step > 0 ? 0 : state.rows.length - 1);
}

document.addEventListener("keydown", (event) => {
  const tag = event.target.tagName;
  if (tag === "TEXTAREA") {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); decide("note"); }
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (tag === "INPUT" || tag === "SELECT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = {
    j: () => state.current + 1 < state.rows.length ? select(state.current + 1) : page(1),
    k: () => state.current > 0 ? select(state.current - 1) : page(-1),
    a: () => decide("accept"), f: () => decide("flip"), d: () => decide("drop"), u: () => decide("clear"),
    n: () => { const note = document.getElementById("note"); if (note) { event.preventDefault(); note.focus(); } },
  };
  if (keys[event.key]) keys[event.key]();
});
