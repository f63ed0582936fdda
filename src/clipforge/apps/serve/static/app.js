// clipforge page: classify an uploaded image against typed labels, and search the index by text.
"use strict";

const $ = (id) => document.getElementById(id);
let chosenFile = null;

async function apiError(response) {
  try {
    const body = await response.json();
    const detail = body.detail;
    if (Array.isArray(detail)) return detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ");
    return String(detail ?? response.statusText);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function chooseFile(file) {
  if (!file) return;
  chosenFile = file;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-hint").textContent = file.name;
}

function renderBars(labels) {
  const list = $("bars");
  list.replaceChildren();
  for (const { label, prob } of labels) {
    const row = document.createElement("li");
    row.className = "bar-row";
    row.dataset.label = label;
    row.dataset.prob = prob.toFixed(6);
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(prob * 100).toFixed(1)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(prob * 100).toFixed(1)}%`;
    row.append(name, track, value);
    list.append(row);
  }
}

async function classify() {
  $("classify-error").textContent = "";
  if (!chosenFile) { $("classify-error").textContent = "Choose an image first."; return; }
  const form = new FormData();
  form.append("image", chosenFile);
  form.append("labels", $("labels").value);
  $("classify-btn").disabled = true;
  try {
    const response = await fetch("/classify", { method: "POST", body: form });
    if (!response.ok) { $("classify-error").textContent = await apiError(response); return; }
    renderBars((await response.json()).labels);
  } catch (err) {
    $("classify-error").textContent = String(err);
  } finally {
    $("classify-btn").disabled = false;
  }
}

function renderGrid(results) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const hit of results) {
    const figure = document.createElement("figure");
    figure.className = "hit";
    const img = document.createElement("img");
    img.alt = hit.metadata.path ?? `#${hit.id}`;
    if (hit.thumbnail_url) img.src = hit.thumbnail_url;
    const caption = document.createElement("figcaption");
    caption.textContent = `${hit.metadata.label ?? hit.metadata.path ?? hit.id} · ${hit.score.toFixed(3)}`;
    figure.append(img, caption);
    grid.append(figure);
  }
}

async function search(event) {
  event.preventDefault();
  $("search-error").textContent = "";
  const q = $("query").value.trim();
  if (!q) { $("search-error").textContent = "Type a query."; return; }
  $("search-btn").disabled = true;
  try {
    const response = await fetch(`/search?q=${encodeURIComponent(q)}&k=12`);
    if (!response.ok) { $("search-error").textContent = await apiError(response); return; }
    renderGrid((await response.json()).results);
  } catch (err) {
    $("search-error").textContent = String(err);
  } finally {
    $("search-btn").disabled = false;
  }
}

async function health() {
  try {
    const info = await (await fetch("/health")).json();
    $("health").textContent = `${info.model || "model"} · ${info.index_size} indexed`;
  } catch {
    $("health").textContent = "service unreachable";
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  chooseFile(e.dataTransfer.files[0]);
});
$("image-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
$("classify-btn").addEventListener("click", classify);
$("search-form").addEventListener("submit", search);
health();
