// The results page: the study from GET /v1/results (behind the token, like /v1/models), its
// figures fetched with the same token and shown from blob URLs. Text goes in as textContent only.
"use strict";

const TOKEN_KEY = "raydistill-token"; // shared with the classify page, for this tab only
let objectUrls = [];

function token() {
  return document.getElementById("token").value.trim();
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function $(id) {
  return document.getElementById(id);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function num(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : "–";
}

function pct(x) {
  return typeof x === "number" ? (100 * x).toFixed(1) + " %" : "–";
}

function count(x) {
  return typeof x === "number" ? Math.round(x).toLocaleString("en-US") : "–";
}

function signed(points) {
  return (points >= 0 ? "+" : "") + points.toFixed(1);
}

function ratio(x) {
  return typeof x === "number" ? x.toFixed(2) + "×" : "–";
}

function diffVsBest(cell) {
  if (cell.verdict === "best" || typeof cell.diff_vs_best !== "number") return "—";
  const diff = signed(100 * cell.diff_vs_best);
  if (typeof cell.ci_low !== "number") return diff;
  return `${diff} [${signed(100 * cell.ci_low)}, ${signed(100 * cell.ci_high)}]`;
}

function renderCells(study) {
  const body = document.querySelector("#cells tbody");
  body.replaceChildren();
  for (const c of study.cells) {
    const row = document.createElement("tr");
    row.dataset.strategy = c.strategy;
    row.dataset.temperature = c.temperature;
    const verdictClass = "verdict-" + String(c.verdict).split(" ")[0];
    const cells = [
      c.strategy, c.temperature, `${num(c.val_accuracy_mean, 4)} ± ${num(c.val_accuracy_std, 4)}`, c.n,
      pct(c.retained), pct(c.retained_gain), num(c.fidelity_mean, 3), count(c.params), diffVsBest(c),
      typeof c.p_holm === "number" ? c.p_holm.toPrecision(3) : "—",
    ];
    for (const text of cells) row.appendChild(el("td", text));
    const verdict = el("td", c.verdict, "verdict " + verdictClass);
    verdict.dataset.field = "verdict";
    row.appendChild(verdict);
    body.appendChild(row);
  }
  const t = study.teacher || {};
  if (typeof t.validation_accuracy === "number") {
    const row = document.createElement("tr");
    row.className = "teacher-row";
    for (const text of ["teacher", "—", num(t.validation_accuracy, 4), "1", "100.0 %", "100.0 %", "1.000",
      count(t.parameters), "—", "—", "—"]) row.appendChild(el("td", text));
    body.appendChild(row);
  }
  const n = study.trials;
  $("trials").textContent = n ? `Validation accuracy, mean ± std over seeds. Trials: ${n.total} ` +
    `(${n.completed} completed, ${n.error} in error, ${n.stopped_early} stopped early` +
    (n.duplicate ? `, ${n.duplicate} duplicates ignored` : "") + "); only completed trials are averaged." : "";
  $("verdict").textContent = study.verdict ? "Verdict: " + study.verdict : "";
  $("strategies").textContent = study.strategy_verdict || "";
  $("policy").textContent = study.policy || "";
}

function setFacts(card, facts) {
  for (const [key, text] of Object.entries(facts)) {
    const node = document.querySelector(`#${card} [data-fact="${key}"]`);
    if (node) node.textContent = text;
  }
}

function renderWinner(study) {
  const w = study.winner || {};
  const p = w.provenance || {};
  const m = p.metrics || {};
  const best = w.best_cell;
  let cell = p.strategy ? `${p.strategy}, T=${p.temperature ?? "–"}` : "–";
  if (best) cell += best.strategy === p.strategy && best.temperature === p.temperature ? " (the best-mean cell)" : "";
  let test = pct(m.test_accuracy);
  if (typeof m.test_accuracy_mean === "number") {
    test += ` (cell: ${pct(m.test_accuracy_mean)} ± ${pct(m.test_accuracy_std)} over seeds)`;
  }
  setFacts("winner", {
    cell,
    teacher_layers: Array.isArray(p.teacher_layers) ? p.teacher_layers.join(", ") : (p.teacher_layers ?? "–"),
    layers: p.student_num_layers ? `${p.student_num_layers} of the teacher's ${p.teacher_num_layers ?? "?"}` : "–",
    hyper: p.alpha !== undefined ? `${p.alpha}, ${p.lr ?? "–"}` : "–",
    seed: p.seed !== undefined ? `${p.seed} of ${(p.seeds || []).join(", ")}` : "–",
    validation_accuracy: typeof m.val_accuracy_mean === "number"
      ? `${pct(m.val_accuracy)} (cell mean over seeds ${pct(m.val_accuracy_mean)})` : pct(m.val_accuracy),
    test_accuracy: test,
    teacher_sha256: p.teacher_sha256 ? p.teacher_sha256.slice(0, 12) + "…" : "–",
  });
  let note = p.exported || "";
  if (w.exported_is_best_cell === false && best) {
    note = `Note: the exported student is not this study's best-mean cell (${best.strategy}, T=${best.temperature}).`;
  } else if (!w.provenance) {
    note = "No exported student in this run yet.";
  }
  document.querySelector('#winner [data-fact="note"]').textContent = note;
}

function renderTeacher(study) {
  const t = study.teacher || {};
  setFacts("teacher", {
    layers: t.layers ?? "–",
    parameters: count(t.parameters),
    validation_accuracy: pct(t.validation_accuracy),
    calibration: typeof t.macro_f1 === "number" ? `${num(t.macro_f1, 3)}, ${num(t.ece, 3)}` : "–",
    test_accuracy: pct(t.test_accuracy),
    majority_baseline: pct(t.majority_baseline),
  });
}

function renderActiveLearning(study) {
  const al = study.active_learning;
  $("al").hidden = !al;
  if (!al) return;
  const arms = [...new Set(al.curve.map((r) => r.acquisition))];
  const counts = [...new Set(al.curve.map((r) => r.labeled_count))].sort((a, b) => a - b);
  const head = document.querySelector("#al-table thead");
  const body = document.querySelector("#al-table tbody");
  head.replaceChildren();
  body.replaceChildren();
  if (arms.length) {
    const tr = document.createElement("tr");
    for (const text of ["labelled", ...arms]) tr.appendChild(el("th", text));
    head.appendChild(tr);
    for (const n of counts) {
      const row = document.createElement("tr");
      row.appendChild(el("td", count(n)));
      for (const arm of arms) {
        const point = al.curve.filter((r) => r.acquisition === arm && r.labeled_count === n).pop();
        row.appendChild(el("td", point ? num(point.val_accuracy, 4) : "—"));
      }
      body.appendChild(row);
    }
  }
  const list = $("al-sentences");
  list.replaceChildren(...al.vs_random.map((r) => el("li", r.sentence)));
  $("al-error").textContent = al.error ? "Not shown: " + al.error : "";
}

function renderServing(study) {
  const s = study.serving;
  $("serving").hidden = !s;
  if (!s) return;
  $("serving-error").textContent = s.error || "";
  $("serving-headline").replaceChildren(...(s.headline || []).map((line) => el("li", line)));
  const body = document.querySelector("#serving-table tbody");
  body.replaceChildren();
  for (const r of s.http || []) {
    const row = document.createElement("tr");
    for (const text of [r.texts_per_request, r.concurrency, ratio(r.student_vs_teacher),
      ratio(r.student_batched_vs_per_request), ratio(r.teacher_batched_vs_per_request)]) {
      row.appendChild(el("td", text));
    }
    body.appendChild(row);
  }
  const m = s.machine || {};
  $("serving-machine").textContent = s.created
    ? `Measured ${s.created} on ${m.cpu ?? "?"} (${m.cpu_cores ?? "?"} cores, ${m.device ?? "?"}). ` +
      "Absolute figures are that machine's; compare the ratios." : "";
}

// Figures of several panels or many rows take the page's width; the others share a row.
const WIDE_PLOTS = new Set(["forest.png", "learning_curves.png", "bench.png", "active_learning.png"]);

async function renderPlots(study) {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  const byName = new Map((study.plots || []).map((p) => [p.name, p]));
  await Promise.all([...document.querySelectorAll(".figures")].map(async (box) => {
    box.replaceChildren();
    for (const name of box.dataset.plots.split(" ")) {
      const plot = byName.get(name);
      if (!plot) continue;
      const figure = el("figure", undefined, WIDE_PLOTS.has(name) ? "wide" : undefined);
      const img = el("img");
      img.alt = plot.title;
      img.dataset.plot = name;
      figure.append(img, el("figcaption", plot.title));
      box.appendChild(figure);
      try {
        // An <img src> cannot send the bearer token: fetch the PNG and show it from a blob URL.
        const response = await fetch(plot.url, { headers: authHeaders() });
        if (!response.ok) throw new Error(`${response.status}`);
        const url = URL.createObjectURL(await response.blob());
        objectUrls.push(url);
        await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
      } catch (err) {
        figure.appendChild(el("p", `${name}: ${err.message}`, "error"));
      }
    }
  }));
}

async function load() {
  const status = $("status");
  status.textContent = "Loading the study…";
  let response;
  let body = null;
  try {
    response = await fetch("v1/results", { headers: authHeaders() });
    body = await response.json();
  } catch (err) {
    status.textContent = "results: " + err.message;
    return;
  }
  if (!response.ok) {
    $("study").hidden = true;
    const why = body && body.error ? body.error : response.statusText;
    status.textContent = `${response.status}: ${why}` +
      (response.status === 401 ? " — the study is behind the token: enter it above." : "");
    return;
  }
  $("study").hidden = false;
  $("students").hidden = !body.available;
  document.querySelector(".pair").hidden = !body.teacher && !(body.winner && body.winner.provenance);
  status.textContent = body.available ? `Run ${body.run}.` : body.message;
  renderCells(body);
  renderWinner(body);
  renderTeacher(body);
  renderActiveLearning(body);
  renderServing(body);
  await renderPlots(body);
  document.body.dataset.loaded = "true";
}

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token()));
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") load(); });
$("load").addEventListener("click", () => { sessionStorage.setItem(TOKEN_KEY, token()); load(); });
load();
