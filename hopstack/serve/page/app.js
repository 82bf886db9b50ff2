// The comparison page: pick variants, ask one question, see each variant's answer, sub-questions, hops,
// documents, clues, per-stage latency and graph side by side. Plain DOM code; every text goes in through
// textContent, never innerHTML.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
};
const fmt = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : "");
const snippet = (text, words = 40) => {
  const parts = (text || "").split(/\s+/);
  return parts.slice(0, words).join(" ") + (parts.length > words ? " …" : "");
};

let pipelines = [];

async function checkReady() {
  const badge = document.getElementById("ready");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    badge.textContent = body.ready ? "ready" : body.error ? "failed" : `warming up ${body.warming || ""}`;
    badge.className = "badge " + (body.ready ? "ok" : "wait");
    if (!body.ready && !body.error) setTimeout(checkReady, 1000);
  } catch (error) {
    badge.textContent = "unreachable";
    setTimeout(checkReady, 2000);
  }
}

async function loadPipelines() {
  const response = await fetch("/v1/pipelines");
  const body = await response.json();
  pipelines = body.pipelines;
  const sample = pipelines.find((p) => p.name === body.default).sample_question;
  if (sample) document.getElementById("question").placeholder = sample;
  const box = document.getElementById("variants");
  box.replaceChildren();
  for (const p of pipelines) {
    const input = el("input", { type: "checkbox", value: p.name, "data-testid": `variant-${p.name}` });
    input.checked = true;
    box.append(el("label", {}, input, el("span", { text: p.name }), el("small", { text: p.description })));
  }
}

function documentsTable(documents, testid) {
  const table = el("table", { "data-testid": testid });
  table.append(el("tr", {}, el("th", { text: "#" }), el("th", { text: "document" }), el("th", { class: "num", text: "score" })));
  documents.forEach((d, i) => {
    const title = (d.meta && (d.meta.title || d.meta.source_id)) || d.id;
    const cell = el("td", {}, el("strong", { text: title }), el("div", { class: "snippet", text: snippet(d.content) }));
    table.append(el("tr", {}, el("td", { class: "num", text: String(i + 1) }), cell, el("td", { class: "num", text: fmt(d.score) })));
  });
  return table;
}

function hopsList(trace) {
  const list = el("ol", { "data-testid": "hops" });
  trace.queries.forEach((query, i) => list.append(el("li", { text: `hop ${i + 1}: ${query}` })));
  list.append(el("li", { text: `stopped: ${trace.stopped} after ${trace.hops} hop(s)` }));
  return list;
}

function stagesTable(timings) {
  const table = el("table", { "data-testid": "stages" });
  table.append(el("tr", {}, el("th", { text: "stage" }), el("th", { text: "component" }), el("th", { class: "num", text: "ms" })));
  for (const stage of timings.stages) {
    table.append(el("tr", {}, el("td", { text: stage.node }), el("td", { text: stage.type }), el("td", { class: "num", text: fmt(stage.ms, 1) })));
  }
  const total = `total ${fmt(timings.total_ms, 1)} ms (queued ${fmt(timings.queue_ms, 1)} ms, batch of ${timings.batch_size})`;
  table.append(el("tr", {}, el("td", { colspan: "3", text: total })));
  return table;
}

function renderVariant(card, pipeline, body) {
  const answer = body.answer;
  if (answer) {
    const confidence = answer.confidence == null ? "" : ` (confidence ${fmt(answer.confidence, 2)})`;
    card.append(el("h3", { text: "answer" }), el("p", { class: "answer", "data-testid": "answer", text: (answer.text || "—") + confidence }));
    if (answer.supported === false) {
      const why = `unsupported: ${answer.unsupported_because.join("; ")}`;
      card.append(el("p", { class: "unsupported", "data-testid": "unsupported", text: why }));
    }
  }
  const trace = body.trace || {};
  for (const [node, subs] of Object.entries(trace.sub_questions || {})) {
    if (!subs) continue;
    const list = el("ul", { "data-testid": "sub-questions" });
    subs.forEach((q) => list.append(el("li", { text: q })));
    card.append(el("h3", { text: `sub-questions (${node})` }), list);
  }
  for (const [node, hops] of Object.entries(trace.hops || {})) {
    if (hops) card.append(el("h3", { text: `hops (${node})` }), hopsList(hops));
  }
  if (body.documents) card.append(el("h3", { text: `documents (${body.documents.length})` }), documentsTable(body.documents, "documents"));
  if (body.clues) card.append(el("h3", { text: `clues (${body.clues.length})` }), documentsTable(body.clues, "clues"));
  card.append(el("h3", { text: "latency per stage" }), stagesTable(body.timings));
}

function graphBlock(pipeline) {
  const details = el("details", { class: "graph" }, el("summary", { text: "graph" }));
  details.append(el("img", { src: `/v1/pipelines/${encodeURIComponent(pipeline.name)}/graph.svg`, alt: `graph of ${pipeline.name}`, loading: "lazy" }));
  details.append(el("pre", { text: pipeline.mermaid }));
  return details;
}

async function ask(event) {
  event.preventDefault();
  const question = document.getElementById("question").value.trim();
  const topK = parseInt(document.getElementById("top-k").value, 10);
  const chosen = [...document.querySelectorAll("#variants input:checked")].map((i) => i.value);
  const error = document.getElementById("error");
  error.textContent = "";
  if (!question || chosen.length === 0) {
    error.textContent = !question ? "Type a question." : "Choose at least one variant.";
    return;
  }
  const button = document.getElementById("ask-button");
  button.disabled = true;
  const results = document.getElementById("results");
  results.replaceChildren();
  const jobs = chosen.map(async (name) => {
    const pipeline = pipelines.find((p) => p.name === name);
    const card = el("article", { class: "variant", "data-testid": `result-${name}` },
      el("h2", { text: name }), el("p", { class: "description", text: pipeline.description }));
    results.append(card);
    const status = el("p", { text: "running…" });
    card.append(status);
    try {
      const response = await fetch("/v1/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question, pipeline: name, top_k: topK, return: ["documents", "clues", "answer", "trace"] }),
      });
      const body = await response.json();
      status.remove();
      if (!response.ok) {
        card.append(el("p", { class: "failed", "data-testid": "failure", text: `${response.status}: ${body.detail}` }));
      } else {
        renderVariant(card, pipeline, body);
      }
    } catch (failure) {
      status.textContent = `request failed: ${failure}`;
    }
    card.append(graphBlock(pipeline));
    card.dataset.done = "true";
  });
  await Promise.all(jobs);
  button.disabled = false;
}

document.getElementById("question-form").addEventListener("submit", ask);
checkReady();
loadPipelines().catch((failure) => {
  document.getElementById("error").textContent = `could not list pipelines: ${failure}`;
});
