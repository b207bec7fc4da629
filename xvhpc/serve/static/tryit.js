// The try-it page: post the upload to v1/predict (threshold 0: every class comes back, the
// slider filters here) and draw whatever the answer holds. Task-blind: predictions (with a box
// for detectors), a heatmap PNG, a label-map mask PNG (class 0, usually background, undrawn).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const root = $("tryit");
  const card = JSON.parse(root.dataset.card);
  const maxBytes = parseFloat(root.dataset.maxMb) * 1024 * 1024;
  const palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                   "#f032e6", "#bfef45", "#469990", "#9a6324", "#800000", "#000075"];
  let answer = null, picture = null, maskLayer = null;

  function colour(i) { return palette[i % palette.length]; }

  function say(text, isError) {
    $("message").textContent = text;
    $("message").className = isError ? "error" : "";
  }

  function loadImage(src) {
    return new Promise((resolve) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => resolve(null);  // DICOM: the browser cannot show it; draw on blank
      img.src = src;
    });
  }

  async function maskCanvas(b64) {
    const img = await loadImage("data:image/png;base64," + b64);
    if (!img) return null;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < px.data.length; i += 4) {
      const k = px.data[i];
      if (k === 0 || k === 255) { px.data[i + 3] = 0; continue; }
      const hex = colour(k);
      px.data[i] = parseInt(hex.slice(1, 3), 16);
      px.data[i + 1] = parseInt(hex.slice(3, 5), 16);
      px.data[i + 2] = parseInt(hex.slice(5, 7), 16);
      px.data[i + 3] = 110;
    }
    g.putImageData(px, 0, 0);
    return c;
  }

  function drawCanvas(threshold) {
    const canvas = $("canvas"), g = canvas.getContext("2d");
    const w = picture ? picture.naturalWidth : (maskLayer ? maskLayer.width : 256);
    const h = picture ? picture.naturalHeight : (maskLayer ? maskLayer.height : 256);
    canvas.width = w; canvas.height = h;
    g.fillStyle = "#eee"; g.fillRect(0, 0, w, h);
    if (picture) g.drawImage(picture, 0, 0);
    if (maskLayer) g.drawImage(maskLayer, 0, 0, w, h);
    let boxes = 0;
    g.lineWidth = Math.max(2, Math.round(Math.max(w, h) / 200));
    g.font = Math.max(12, Math.round(Math.max(w, h) / 40)) + "px sans-serif";
    for (const p of answer.predictions) {
      if (!p.box || p.confidence < threshold) continue;
      const k = card.classes.indexOf(p.label);
      const [x0, y0, x1, y1] = p.box;
      g.strokeStyle = g.fillStyle = colour(k < 0 ? 0 : k);
      g.strokeRect(x0, y0, x1 - x0, y1 - y0);
      g.fillText(p.label + " " + p.confidence.toFixed(2), x0 + 2, Math.max(12, y0 - 3));
      boxes += 1;
    }
    $("overlay-caption").textContent = answer.predictions.some((p) => p.box)
      ? " · " + boxes + " box(es) at or above the threshold" : (maskLayer ? " · mask" : "");
    $("canvas").dataset.boxes = String(boxes);
  }

  function render() {
    const t = parseFloat($("threshold").value);
    $("threshold-value").textContent = t.toFixed(2);
    const body = $("classes").querySelector("tbody");
    body.replaceChildren();
    for (const p of answer.predictions) {
      const row = document.createElement("tr");
      if (p.confidence < t) row.className = "below";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (p.confidence * 12).toFixed(2) + "rem";
      for (const text of [p.label, p.confidence.toFixed(3)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      const cell = document.createElement("td");
      cell.appendChild(bar);
      row.appendChild(cell);
      body.appendChild(row);
    }
    $("decision").textContent = answer.decision ? "decision: " + answer.decision : "";
    drawCanvas(t);
  }

  async function show(data, file) {
    answer = data;
    picture = await loadImage(URL.createObjectURL(file));
    maskLayer = data.mask ? await maskCanvas(data.mask) : null;
    const heat = $("heatmap-view");
    heat.hidden = !data.heatmap;
    if (data.heatmap) {
      $("heatmap").src = "data:image/png;base64," + data.heatmap;
      $("heatmap-caption").textContent = "heatmap of " + (data.heatmap_label || "the decision");
    }
    $("result").hidden = false;
    render();
    say(data.predictions.length + " prediction(s)", false);
  }

  $("upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("file").files[0];
    if (!file) { say("choose an image first", true); return; }
    if (file.size > maxBytes) { say("the image is larger than the server takes", true); return; }
    const form = new FormData();
    form.append("file", file);
    form.append("threshold", "0");
    form.append("heatmap", $("want-heatmap").checked ? "true" : "false");
    say("predicting…", false);
    $("send").disabled = true;
    try {
      const reply = await fetch("v1/predict", { method: "POST", body: form });
      const data = await reply.json();
      if (!reply.ok) {
        const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
        say("error " + reply.status + ": " + detail, true);
        return;
      }
      await show(data, file);
    } catch (err) {
      say("the server did not answer: " + err, true);
    } finally {
      $("send").disabled = false;
    }
  });
  $("threshold").addEventListener("input", () => { if (answer) render(); });
})();
