// Progressive updates: the pages are complete as the server rendered them; this only polls
// the JSON the page names (data-poll) every few seconds and redraws states and progress.
"use strict";
(function () {
  const PERIOD_MS = 3000;
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const state = (s) => '<span class="step state-' + esc(s.state) + '">' + esc(s.name) + ": " + esc(s.state) + "</span>";

  function listRow(run) {
    const row = document.querySelector('tr[data-run="' + CSS.escape(run.name) + '"]');
    if (!row) return;
    const cell = row.querySelector('[data-field="state"]');
    cell.textContent = run.state;
    cell.className = "state state-" + run.state;
    row.querySelector('[data-field="steps"]').innerHTML = run.steps.map(state).join(" ");
    row.querySelector('[data-field="progress"]').innerHTML = run.points.map((p) =>
      '<div class="progress"><progress max="1" value="' + Number(p.fraction) + '"></progress> ' + esc(p.text) + "</div>").join("");
  }

  function runPage(run) {
    const head = document.getElementById("run-state");
    head.textContent = run.state;
    head.className = "state state-" + run.state;
    document.getElementById("run-error").textContent = run.error || "";
    document.getElementById("steps").innerHTML = run.steps.map((s) => "<li>" + state(s) + " " + esc(s.job_id) + "</li>").join("");
    for (const p of run.points) {
      const box = document.querySelector('.point[data-point="' + Number(p.point) + '"]');
      if (!box) continue;
      box.querySelector("progress").value = Number(p.fraction);
      box.querySelector(".percent").textContent = Math.round(Number(p.fraction) * 100) + " %";
      box.querySelector(".time-left").textContent = p.time_left ? p.time_left + " left" : "";
      box.querySelector(".progress-text").textContent = "point " + p.point + ": " + p.text;
      box.querySelector(".charts").innerHTML = run.charts[p.point] || "";  // server-escaped SVG
    }
  }

  async function poll(url, draw) {
    try {
      const reply = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (reply.ok) draw(await reply.json());
    } catch (err) { /* the server restarts or the node is gone: keep the page, try again */ }
    setTimeout(() => poll(url, draw), PERIOD_MS);
  }

  const list = document.getElementById("runs");
  if (list) setTimeout(() => poll(list.dataset.poll, (d) => d.runs.forEach(listRow)), PERIOD_MS);
  const run = document.getElementById("run");
  if (run) setTimeout(() => poll(run.dataset.poll, runPage), PERIOD_MS);
})();
