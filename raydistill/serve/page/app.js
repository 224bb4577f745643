// The page: ask both models at once, show each answer with its latency, and the models' facts.
"use strict";

const MODELS = ["student", "teacher"];

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = document.getElementById("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function field(model, name) {
  return document.querySelector(`#result-${model} [data-field="${name}"]`);
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const why = body && body.error ? body.error : response.statusText;
    throw new Error(`${response.status}: ${why}`);
  }
  return body;
}

function formatNumber(x) {
  return typeof x === "number" ? x.toLocaleString("en-US") : "–";
}

function formatAccuracy(x) {
  return typeof x === "number" ? (100 * x).toFixed(1) + " %" : "–";
}

async function loadModels() {
  try {
    const body = await fetchJson("v1/models", { headers: headers() });
    for (const m of body.models) {
      const card = document.getElementById(`result-${m.name}`);
      if (!card) continue;
      const set = (key, text) => { card.querySelector(`[data-fact="${key}"]`).textContent = text; };
      set("layers", m.layers ?? "–");
      set("parameters", formatNumber(m.parameters));
      let strategy = m.strategy ?? "–";
      if (m.teacher_layers) strategy += ` (teacher layers ${m.teacher_layers.join(", ")})`;
      if (m.temperature) strategy += `, T=${m.temperature}`;
      set("strategy", strategy);
      // The exported student is one seed of its cell; the report ranks cells by their mean.
      const mean = m.validation_accuracy_mean_over_seeds;
      set("validation_accuracy", mean == null ? formatAccuracy(m.validation_accuracy)
        : `${formatAccuracy(m.validation_accuracy)} (exported seed; cell mean over seeds ${formatAccuracy(mean)})`);
    }
  } catch (err) {
    document.getElementById("status").textContent = "models: " + err.message;
  }
}

function textsFromInput() {
  const raw = document.getElementById("text").value;
  if (document.getElementById("per-line").checked) {
    return raw.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
  }
  return raw.trim() ? [raw] : [];
}

// Every label's probability for the first text, as bars (the API's return_all_scores).
function showDistribution(model, scores) {
  const box = field(model, "dist");
  box.replaceChildren();
  for (const s of scores || []) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.label = s.label;
    const name = document.createElement("span");
    name.textContent = s.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * s.score).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.textContent = (100 * s.score).toFixed(1) + " %";
    row.append(name, track, value);
    box.appendChild(row);
  }
}

function show(model, body) {
  const first = body.predictions[0];
  field(model, "label").textContent = first.label;
  field(model, "score").textContent = first.score.toFixed(3);
  field(model, "latency").textContent = body.latency_ms.toFixed(1) + " ms";
  showDistribution(model, first.scores);
  const list = field(model, "all");
  list.replaceChildren();
  if (body.predictions.length > 1) {
    for (const p of body.predictions) {
      const item = document.createElement("li");
      item.textContent = `${p.label} (${p.score.toFixed(3)})`;
      list.appendChild(item);
    }
  }
}

async function classify() {
  const status = document.getElementById("status");
  const texts = textsFromInput();
  if (texts.length === 0) { status.textContent = "Type a text first."; return; }
  status.textContent = "Asking both models…";
  for (const model of MODELS) {
    for (const name of ["label", "score", "latency", "error"]) field(model, name).textContent = "";
    field(model, "all").replaceChildren();
    field(model, "dist").replaceChildren();
  }
  const started = performance.now();
  await Promise.all(MODELS.map(async (model) => {
    try {
      const body = await fetchJson("v1/classify", {
        method: "POST", headers: headers(), body: JSON.stringify({ texts, model, return_all_scores: true }),
      });
      show(model, body);
    } catch (err) {
      field(model, "error").textContent = err.message;
    }
  }));
  status.textContent = `Done in ${(performance.now() - started).toFixed(0)} ms (both models, in parallel).`;
  loadModels();
}

// The study's headline under the models: the verdicts and the serving ratios, from /v1/results.
async function loadStudy() {
  try {
    const study = await fetchJson("v1/results", { headers: headers() });
    if (!study.available) return;
    const box = document.getElementById("study-summary");
    box.querySelector('[data-study="verdict"]').textContent = study.verdict || "";
    box.querySelector('[data-study="strategies"]').textContent = study.strategy_verdict || "";
    const list = box.querySelector('[data-study="serving"]');
    list.replaceChildren();
    for (const line of (study.serving && study.serving.headline) || []) {
      const item = document.createElement("li");
      item.textContent = line;
      list.appendChild(item);
    }
    box.hidden = false;
  } catch (err) {
    // the study is a side dish: a run without a sweep, or a token not yet typed, shows none
  }
}

// The token is kept for this tab only, so the results page can use it too.
const TOKEN_KEY = "raydistill-token";
document.getElementById("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
document.getElementById("token").addEventListener("input", (e) => {
  sessionStorage.setItem(TOKEN_KEY, e.target.value.trim());
  loadStudy();
});
for (const button of document.querySelectorAll("#examples .example")) {
  button.addEventListener("click", () => { document.getElementById("text").value = button.textContent; classify(); });
}
document.getElementById("classify").addEventListener("click", classify);
document.getElementById("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify();
});
loadModels();
loadStudy();
