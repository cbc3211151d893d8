// The page: files go one by one to this server's /v1/anonymize (server-sent events for
// progress), results are shown beside the originals and kept in the page for download.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { token: "", results: [], queue: [], busy: false, methods: null };

// -- access token: from the address's #token=..., the session, or the box ----------------
function loadToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("anonyface-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);  // out of the address bar and history
  }
  state.token = sessionStorage.getItem("anonyface-token") || "";
}
function authHeaders(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

async function checkHealth() {
  try {
    const r = await fetch("/v1/health");
    const h = await r.json();
    state.methods = h.methods;
    for (const input of document.querySelectorAll('input[name="method"]')) {
      if (!h.methods.includes(input.value)) {
        input.disabled = true;
        input.closest("label").title = "not available on this server";
        if (input.checked) $('input[name="method"][value="blur"]').checked = true;
      }
    }
    $("#token-box").hidden = !(h.token_required && !state.token);
  } catch (e) {
    setSummary("The anonyface server does not answer: is `anonyface serve` still running?");
  }
  showMethodOptions();
}

// -- options ---------------------------------------------------------------------------
function showMethodOptions() {
  const method = $('input[name="method"]:checked').value;
  for (const m of ["pixelate", "blur", "solid"]) {
    for (const el of document.querySelectorAll(`.only-${m}`)) el.hidden = m !== method;
  }
}
function optionFields() {
  const form = $("#options");
  const fields = { method: $('input[name="method"]:checked').value };
  fields.threshold = form.threshold.value;
  fields.mask_scale = form.mask_scale.value;
  fields.shape = form.shape.value;
  if (fields.method === "pixelate") fields.blocks = form.blocks.value;
  if (fields.method === "blur") fields.blur_strength = form.blur_strength.value;
  if (fields.method === "solid") {
    const hex = form.color.value;
    fields.color = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(",");
  }
  if (form.seed.value !== "") fields.seed = form.seed.value;
  if (form.format.value) fields.format = form.format.value;
  if (form.quality.value) fields.quality = form.quality.value;
  for (const flag of ["keep_metadata", "no_audit", "no_audio"]) if (form[flag].checked) fields[flag] = "true";
  return fields;
}

// -- server-sent events over a POST (fetch, so that the file can be the body) -----------
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { name, data: JSON.parse(data) };
    }
  }
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

// -- one file ---------------------------------------------------------------------------
function addItem(file) {
  const li = $("#item").content.firstElementChild.cloneNode(true);
  $(".name", li).textContent = file.name;
  $("#results").prepend(li);
  const item = { file, li, controller: null, blob: null, filename: null, url: null, beforeUrl: null };
  $(".cancel", li).addEventListener("click", () => {
    if (item.controller) item.controller.abort();
    const at = state.queue.indexOf(item);
    if (at >= 0) {
      state.queue.splice(at, 1);
      finish(item, "Cancelled");
    }
  });
  setStatus(item, "Waiting…");
  $(".working", li).hidden = false;
  $("progress", li).removeAttribute("value");
  return item;
}
function setStatus(item, text) { $(".status", item.li).textContent = text; }
function finish(item, text) {
  setStatus(item, text);
  $(".working", item.li).hidden = true;
}
function showError(item, message) {
  finish(item, "Failed");
  const p = $(".error", item.li);
  p.textContent = `Could not anonymize this file: ${message}`;
  p.hidden = false;
  item.li.classList.add("failed");
}

class ServerError extends Error {}

// One pass of the file through /v1/anonymize with the item's options (and `extra` fields):
// {report, blob, filename}; throws ServerError (the server's words) or AbortError.
async function anonymizeOnce(item, extra = {}) {
  const form = new FormData();
  for (const [k, v] of Object.entries({ ...item.fields, ...extra })) form.append(k, v);
  form.append("file", item.file, item.file.name);
  item.controller = new AbortController();
  const signal = item.controller.signal;
  const response = await fetch("/v1/anonymize", {
    method: "POST", body: form, signal, headers: authHeaders({ Accept: "text/event-stream" }),
  });
  if (!response.ok) {
    if (response.status === 401) $("#token-box").hidden = false;
    throw new ServerError(await errorText(response));
  }
  for await (const ev of readEvents(response)) {
    if (ev.name === "queued") {
      setStatus(item, ev.data.waiting ? `Waiting for the server (${ev.data.waiting} ahead)…` : "Working…");
    } else if (ev.name === "progress") {
      const { frames, total } = ev.data;
      const bar = $("progress", item.li);
      if (total) bar.value = Math.min(100, (100 * frames) / total);
      setStatus(item, total ? `Working… ${frames} of ${total} frames` : `Working… ${frames} frames`);
    } else if (ev.name === "error") {
      throw new ServerError(ev.data.error);
    } else if (ev.name === "done") {
      setStatus(item, "Downloading…");
      const r = await fetch(ev.data.result, { headers: authHeaders(), signal });
      if (!r.ok) throw new ServerError(await errorText(r));
      return { report: ev.data.report, blob: await r.blob(), filename: ev.data.filename };
    }
  }
  throw new ServerError("the server closed the connection before the file was done");
}

function failureText(e) {
  return e instanceof ServerError ? e.message : `the server could not be reached (${e.message})`;
}

async function process(item) {
  const isVideo = item.file.type.startsWith("video/") || /\.(mp4|mov|m4v|mkv|webm|avi)$/i.test(item.file.name);
  item.fields = optionFields();  // kept: a remake (faces chosen to keep) uses the same options
  setStatus(item, "Uploading…");
  try {
    const out = await anonymizeOnce(item);
    item.blob = out.blob;
    item.filename = out.filename;
    showResult(item, out.report, isVideo);
  } catch (e) {
    if (e.name === "AbortError") return finish(item, "Cancelled");
    showError(item, failureText(e));
  } finally {
    item.controller = null;
  }
}

function faceText(report, isVideo) {
  const n = report.faces_found;
  if (isVideo) return `${n} ${n === 1 ? "person" : "people"} covered in ${report.video ? report.video.frames : "?"} frames`;
  const kept = report.kept ? report.kept.length : 0;
  return `${n} ${n === 1 ? "face" : "faces"} covered` + (kept ? `, ${kept} kept visible` : "");
}

// -- faces to keep (photos): outlines on the picture, each a toggle button ---------------
// Clicking one (or Enter / Space on it) marks it kept; the photo is then made again with
// the kept faces' boxes in `keep_boxes`, and the download is that new result.
function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

function showFaces(item, report) {
  const li = item.li;
  // the detector's faces, left to right (the audit's catches are not choosable: they are blurred)
  item.faces = [...report.faces, ...(report.kept || [])]
    .map((f) => ({ box: f.box, kept: false }))
    .sort((a, b) => a.box[0] - b.box[0]);
  item.size = [report.width, report.height];
  const layer = $(".faces", li);
  layer.replaceChildren();
  item.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box;
    const [w, h] = item.size;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "face";
    b.dataset.box = JSON.stringify(face.box);
    b.setAttribute("aria-label", `Keep face ${i + 1}`);
    b.setAttribute("aria-pressed", "false");
    b.title = `Face ${i + 1}: click to keep it visible`;
    Object.assign(b.style, {
      left: `${(100 * Math.max(0, x1)) / w}%`, top: `${(100 * Math.max(0, y1)) / h}%`,
      width: `${(100 * (Math.min(w, x2) - Math.max(0, x1))) / w}%`, height: `${(100 * (Math.min(h, y2) - Math.max(0, y1))) / h}%`,
    });
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = String(i + 1);
    b.append(tag);
    b.addEventListener("click", () => {
      face.kept = !face.kept;
      if (item.showAnonymized) item.showAnonymized();  // the preview is then what the download holds
      drawFaces(item);
      scheduleRemake(item);
    });
    face.button = b;
    layer.append(b);
  });
  $(".keep-hint", li).hidden = item.faces.length === 0;
  drawFaces(item);
}

function drawFaces(item) {
  const kept = [];
  item.faces.forEach((face, i) => {
    face.button.setAttribute("aria-pressed", String(face.kept));
    face.button.title = face.kept ? `Face ${i + 1}: kept visible (click to cover it)` : `Face ${i + 1}: covered (click to keep it visible)`;
    if (face.kept) kept.push(i + 1);
  });
  const list = $(".kept-list", item.li);
  list.hidden = item.faces.length === 0;
  list.textContent = kept.length
    ? `Kept visible in the download: ${kept.length === 1 ? "face" : "faces"} ${kept.join(", ")} (green outline). Every other face is covered.`
    : "Every face is covered (dashed outlines).";
  item.li.dataset.kept = String(kept.length);
}

function setStale(item, stale) {
  const link = $(".download", item.li);
  item.stale = stale;
  item.li.classList.toggle("stale", stale);
  if (stale) {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
    link.textContent = "Updating the download…";
  } else {
    link.href = item.url;
    link.removeAttribute("aria-disabled");
    link.textContent = `Download ${item.filename}`;
  }
  updateBar();
}

function scheduleRemake(item) {
  setStale(item, true);
  clearTimeout(item.remakeTimer);
  if (item.controller) item.controller.abort();  // a newer choice replaces the one in progress
  item.remakeTimer = setTimeout(() => remake(item), 250);
}

async function remake(item) {
  const turn = (item.turn = (item.turn || 0) + 1);
  const keep = item.faces.filter((f) => f.kept).map((f) => f.box);
  const p = $(".error", item.li);
  p.hidden = true;
  setStatus(item, "Updating…");
  try {
    const out = await anonymizeOnce(item, keep.length ? { keep_boxes: JSON.stringify(keep) } : {});
    if (turn !== item.turn) return;
    URL.revokeObjectURL(item.url);
    item.blob = out.blob;
    item.url = URL.createObjectURL(out.blob);
    $("img.after", item.li).src = item.url;
    // the outlines say what the file holds: a face the server did not keep is shown covered
    const keptByServer = (out.report.kept || []).map((k) => k.box);
    const lost = item.faces.filter((f) => f.kept && !keptByServer.some((b) => iou(b, f.box) >= 0.5));
    for (const f of lost) f.kept = false;
    drawFaces(item);
    if (lost.length) {
      p.textContent = `${lost.length === 1 ? "A face" : `${lost.length} faces`} could not be kept (not found again) and ${lost.length === 1 ? "is" : "are"} covered.`;
      p.classList.add("warning");
      p.hidden = false;
    }
    item.li.dataset.faces = out.report.faces_found;
    setStatus(item, faceText(out.report, false));
    setStale(item, false);
  } catch (e) {
    if (turn !== item.turn || e.name === "AbortError") return;
    setStatus(item, "Failed");
    p.textContent = `Could not make the photo with the kept faces: ${failureText(e)} Click a face to try again.`;
    p.classList.remove("warning");
    p.hidden = false;
  } finally {
    if (turn === item.turn) item.controller = null;
  }
}

function showResult(item, report, isVideo) {
  const li = item.li;
  item.url = URL.createObjectURL(item.blob);
  item.beforeUrl = URL.createObjectURL(item.file);
  finish(item, faceText(report, isVideo));
  li.dataset.faces = report.faces_found;
  li.classList.add("done");
  if (report.warnings) {
    const p = $(".error", li);
    p.textContent = report.warnings.join("; ");
    p.hidden = false;
    p.classList.add("warning");
  }
  const link = $(".download", li);
  link.href = item.url;
  link.download = item.filename;
  link.textContent = `Download ${item.filename}`;
  $(".actions", li).hidden = false;
  const toggle = $(".toggle", li);
  if (isVideo) {
    $(".videos", li).hidden = false;
    $(".video-keep-note", li).hidden = false;
    $("video.before", li).src = item.beforeUrl;
    $("video.after", li).src = item.url;
    toggle.hidden = true;
  } else {
    $(".compare", li).hidden = false;
    const before = $("img.before", li);
    before.src = item.beforeUrl;
    before.onerror = () => { before.hidden = true; $(".slider-label", li).hidden = true; toggle.hidden = true; };
    $("img.after", li).src = item.url;
    const slider = $(".slider", li);
    const stage = $(".stage", li);
    const apply = () => {
      before.style.clipPath = `inset(0 ${100 - slider.value}% 0 0)`;
      stage.style.setProperty("--split", `${slider.value}%`);
    };
    slider.addEventListener("input", apply);
    apply();
    const show = (original) => {
      toggle.setAttribute("aria-pressed", String(original));
      toggle.textContent = original ? "Show anonymized" : "Show original";
      slider.value = original ? 100 : 0;
      apply();
    };
    toggle.addEventListener("click", () => show(toggle.getAttribute("aria-pressed") !== "true"));
    item.showAnonymized = () => show(false);
    showFaces(item, report);
  }
  state.results.push(item);
  updateBar();
}

function setSummary(text) { $("#summary").textContent = text; }
function updateBar() {
  const n = state.results.length;
  $("#zip").disabled = n === 0 || state.results.some((it) => it.stale);  // not while a photo is being remade
  $("#clear").disabled = $("#results").children.length === 0;
  const faces = state.results.reduce((s, it) => s + Number(it.li.dataset.faces || 0), 0);
  setSummary(n ? `${n} ${n === 1 ? "file" : "files"} done, ${faces} ${faces === 1 ? "face" : "faces"} covered` : "");
}

async function pump() {
  if (state.busy) return;
  state.busy = true;
  while (state.queue.length) await process(state.queue.shift());
  state.busy = false;
  updateBar();
}
function addFiles(files) {
  for (const file of files) state.queue.push(addItem(file));
  updateBar();
  pump();
}

// -- page wiring -------------------------------------------------------------------------
function wire() {
  const drop = $("#drop");
  $("#pick").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });
  $("#pick-label").tabIndex = 0;
  $("#pick-label").addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#pick").click(); }
  });
  for (const input of document.querySelectorAll('input[name="method"]')) input.addEventListener("change", showMethodOptions);
  for (const id of ["threshold", "mask_scale"]) {
    const input = $(`#${id}`), out = $(`#${id}-out`);
    input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(id === "threshold" ? 2 : 1); });
  }
  $("#zip").addEventListener("click", async () => {
    const blob = await Zip.make(state.results.map((it) => ({ name: it.filename, blob: it.blob })));
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "anonymized.zip";
    document.body.append(a);
    a.click();
    a.remove();
  });
  $("#clear").addEventListener("click", () => {
    for (const it of state.results) {
      clearTimeout(it.remakeTimer);
      if (it.controller) it.controller.abort();
      URL.revokeObjectURL(it.url);
      URL.revokeObjectURL(it.beforeUrl);
    }
    state.results = [];
    for (const li of [...$("#results").children]) if (!li.querySelector(".working:not([hidden])")) li.remove();
    updateBar();
  });
  $("#token-save").addEventListener("click", () => {
    state.token = $("#token").value.trim();
    sessionStorage.setItem("anonyface-token", state.token);
    $("#token-box").hidden = true;
  });
  const tabs = [$("#tab-files"), $("#tab-camera")];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
    }
    tab.focus();
  };
  for (const t of tabs) {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") select(tabs[(tabs.indexOf(t) + 1) % tabs.length]);
    });
  }
  if (typeof Camera !== "undefined") Camera.wire();
}

loadToken();
wire();
checkHealth();
