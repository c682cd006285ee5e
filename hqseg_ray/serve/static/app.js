// hqseg-ray review page: plain JS over the endpoint's own API (same origin, no build step).
// Coordinates everywhere are pixels of the ORIGINAL image / video frame (S.width x S.height); video
// frames come from the session at the model's input size and are drawn scaled up.
"use strict";

const $ = (id) => document.getElementById(id);
const BASE = location.pathname.slice(0, location.pathname.lastIndexOf("/ui/"));  // the app's route prefix
const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190], [0, 128, 128]];

// Everything the page knows; window.hqseg for tests and the curious.
const S = window.hqseg = {
  mode: "image", width: 0, height: 0,
  imageId: null,          // image mode: the cached image
  session: null,          // video/review: {session_id, frames, width, height, fps}
  frame: 0, nframes: 1,
  objectId: 1, objectIds: [1], labels: {},
  clicks: {},             // "frame:object" -> {points: [[x, y]], labels: [1|0], box: [x1, y1, x2, y2] | null}
  preview: {},            // "frame:object" -> mask {size, counts, score, ...} from the latest clicks
  results: {},            // frame -> [{object_id, size, counts, score, source}] (propagation or job output)
  previewImages: {},      // frame -> {image_id, width, height}: the session frame cached for clicks
  output: null, videoId: null, queue: [], queueIndex: -1, saved: [],
  pending: 0, error: null, renders: 0,
};
const frameCache = new Map();   // frame -> ImageBitmap (bounded)

// -- HTTP --------------------------------------------------------------------------------------
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = $("token").value.trim();
  if (token) headers["Authorization"] = "Bearer " + token;
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  S.pending++;
  try {
    const res = await fetch(BASE + path, {method: opts.method || "GET", headers, body: opts.body});
    if (!res.ok) {
      let detail = res.statusText;
      try { const j = await res.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
      throw new Error(`${opts.method || "GET"} ${path}: ${res.status} ${detail}`);
    }
    return opts.raw ? res : (res.headers.get("content-type") || "").includes("json") ? res.json() : res.blob();
  } finally { S.pending--; }
}

function esc(text) { return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }

function status(msg, isError = false) {
  $("status").textContent = msg;
  $("status").classList.toggle("error", isError);
  if (isError) S.error = msg;
}

async function guard(fn) {
  try { await fn(); } catch (e) { console.error(e); status(e.message, true); }
}

// -- drawing -------------------------------------------------------------------------------------
function sizeCanvases(w, h) {
  for (const id of ["frame-canvas", "mask-layer", "marks"]) { $(id).width = w; $(id).height = h; }
  fit();
}

// show the frame as large as the stage allows (pixels stay square and crisp); the canvases keep
// the original resolution, so masks and clicks stay in original pixels
function fit() {
  if (!S.width) return;
  const st = $("stage");
  S.scale = Math.max(0.05, Math.min((st.clientWidth - 8) / S.width, (st.clientHeight - 8) / S.height));
  for (const id of ["frame-canvas", "mask-layer", "marks"]) {
    $(id).style.width = `${S.width * S.scale}px`; $(id).style.height = `${S.height * S.scale}px`;
  }
}

function maskCanvas(rle, color) {
  const [h, w] = rle.size;
  const bits = rleDecode(rle);
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    const x = i % w, y = (i - x) / w;
    // the mask's own border pixels opaque, the inside translucent: shapes stay visible on any colour
    const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !bits[i - 1] || !bits[i + 1] || !bits[i - w] || !bits[i + w];
    img.data.set(color, 4 * i);
    img.data[4 * i + 3] = edge ? 255 : 120;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function color(objectId) { return COLORS[(objectId - 1 + COLORS.length * 100) % COLORS.length]; }

function masksOnFrame(frame) {
  const out = new Map();
  for (const o of S.results[frame] || []) out.set(o.object_id, o);
  for (const [key, m] of Object.entries(S.preview)) {
    const [f, o] = key.split(":").map(Number);
    if (f === frame && m) out.set(o, Object.assign({object_id: o}, m));
  }
  return [...out.values()];
}

async function render() {
  const W = S.width, H = S.height;
  if (!W) return;
  if (S.mode !== "image") {
    const bmp = await frameBitmap(S.frame);
    $("frame-canvas").getContext("2d").drawImage(bmp, 0, 0, W, H);
  }
  const ml = $("mask-layer").getContext("2d");
  ml.clearRect(0, 0, W, H);
  ml.imageSmoothingEnabled = false;
  for (const m of masksOnFrame(S.frame)) {
    if (!m.counts) continue;
    ml.drawImage(maskCanvas(m, color(m.object_id)), 0, 0, W, H);
  }
  drawMarks();
  $("frame-label").textContent = `${S.frame} / ${S.nframes - 1}`;
  $("frame").max = S.nframes - 1; $("frame").value = S.frame;
  S.renders++;
}

function drawMarks(dragBox) {
  const ctx = $("marks").getContext("2d");
  ctx.clearRect(0, 0, S.width, S.height);
  const r = 5 / (S.scale || 1);  // about 5 screen pixels
  for (const [key, c] of Object.entries(S.clicks)) {
    const [f, o] = key.split(":").map(Number);
    if (f !== S.frame) continue;
    c.points.forEach(([x, y], i) => {
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = c.labels[i] ? "#00e676" : "#ff1744"; ctx.fill();
      ctx.lineWidth = r / 4; ctx.strokeStyle = "#000"; ctx.stroke();
    });
    if (c.box) { ctx.strokeStyle = `rgb(${color(o)})`; ctx.lineWidth = r / 2; ctx.strokeRect(c.box[0], c.box[1], c.box[2] - c.box[0], c.box[3] - c.box[1]); }
  }
  if (dragBox) { ctx.lineWidth = r / 3; ctx.setLineDash([4 * r / 5, 3 * r / 5]); ctx.strokeStyle = "#fff"; ctx.strokeRect(...dragBox); ctx.setLineDash([]); }
}

async function frameBitmap(frame) {
  if (frameCache.has(frame)) return frameCache.get(frame);
  const blob = await api(`/ui/api/videos/${S.session.session_id}/frames/${frame}`);
  const bmp = await createImageBitmap(blob);
  if (frameCache.size > 200) frameCache.delete(frameCache.keys().next().value);
  frameCache.set(frame, bmp);
  return bmp;
}

// -- objects -------------------------------------------------------------------------------------
function setObjects(ids) {
  S.objectIds = [...new Set(ids)].sort((a, b) => a - b);
  if (!S.objectIds.length) S.objectIds = [1];
  if (!S.objectIds.includes(S.objectId)) S.objectId = S.objectIds[0];
  $("object").innerHTML = S.objectIds.map((o) => `<option value="${o}">object ${o}${S.labels[o] ? " (" + esc(S.labels[o]) + ")" : ""}</option>`).join("");
  $("object").value = S.objectId;
  $("label").value = S.labels[S.objectId] || "";
}

function selectObject(o) { if (!S.objectIds.includes(o)) setObjects([...S.objectIds, o]); S.objectId = o; setObjects(S.objectIds); }

// -- segmenting clicks ---------------------------------------------------------------------------
function key(frame, o) { return `${frame}:${o}`; }

async function previewImage(frame) {
  // the session's frame, uploaded once as an image: clicks on it are decoder-only requests
  if (!S.previewImages[frame]) {
    const blob = await frameBitmapBlob(frame);
    S.previewImages[frame] = await api("/v1/images", {method: "POST", body: blob, headers: {"Content-Type": "image/png"}});
  }
  return S.previewImages[frame];
}

async function frameBitmapBlob(frame) { return api(`/ui/api/videos/${S.session.session_id}/frames/${frame}`); }

async function segment() {
  const k = key(S.frame, S.objectId), c = S.clicks[k];
  if (!c || (!c.points.length && !c.box)) { delete S.preview[k]; return render(); }
  let target, sx = 1, sy = 1;
  if (S.mode === "image") target = {image_id: S.imageId, width: S.width, height: S.height};
  else { target = await previewImage(S.frame); sx = target.width / S.width; sy = target.height / S.height; }
  const prompt = {};
  if (c.points.length) { prompt.points = c.points.map(([x, y]) => [x * sx, y * sy]); prompt.labels = c.labels; }
  if (c.box) prompt.box = [c.box[0] * sx, c.box[1] * sy, c.box[2] * sx, c.box[3] * sy];
  let out;
  try {
    out = await api(`/v1/images/${target.image_id}/segment`, {method: "POST", json: {prompts: [prompt]}});
  } catch (e) {
    if (S.mode !== "image" && e.message.includes(" 404 ")) { delete S.previewImages[S.frame]; return segment(); }  // evicted
    throw e;
  }
  S.preview[k] = out.masks[0];
  const m = out.masks[0];
  status(`object ${S.objectId} on frame ${S.frame}: mask of ${m.area} px (score ${m.score.toFixed(3)}, ${out.model})`);
  await render();
}

function canvasPoint(ev) {
  const c = $("marks"), r = c.getBoundingClientRect();
  return [Math.round((ev.clientX - r.left) * c.width / r.width * 10) / 10, Math.round((ev.clientY - r.top) * c.height / r.height * 10) / 10];
}

let drag = null;
function onDown(ev) {
  if (!S.width) return;
  ev.preventDefault();
  drag = {start: canvasPoint(ev), negative: ev.shiftKey || ev.button === 2};
}
function onMove(ev) {
  if (!drag || document.querySelector("input[name=tool]:checked").value !== "box") return;
  const [x0, y0] = drag.start, [x1, y1] = canvasPoint(ev);
  drawMarks([Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)]);
}
function onUp(ev) {
  if (!drag) return;
  const d = drag; drag = null;
  const [x0, y0] = d.start, [x1, y1] = canvasPoint(ev);
  const k = key(S.frame, S.objectId);
  const c = S.clicks[k] = S.clicks[k] || {points: [], labels: [], box: null};
  const isBox = document.querySelector("input[name=tool]:checked").value === "box" && Math.abs(x1 - x0) > 3 && Math.abs(y1 - y0) > 3;
  if (isBox) c.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
  else { c.points.push([x0, y0]); c.labels.push(d.negative ? 0 : 1); }
  c.saved = false;
  guard(segment);
}

// -- modes -----------------------------------------------------------------------------------------
function resetWork() {
  Object.assign(S, {clicks: {}, preview: {}, results: {}, previewImages: {}, frame: 0, nframes: 1, queue: [], queueIndex: -1, saved: []});
  frameCache.clear();
  $("queue").innerHTML = ""; $("saved").textContent = "";
}

function setMode(mode) {
  S.mode = mode;
  document.body.className = mode;
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  if (mode === "review") guard(loadOutputs);
}

async function openImage(file) {
  resetWork();
  status(`uploading ${file.name}...`);
  const out = await api("/v1/images", {method: "POST", body: file, headers: {"Content-Type": file.type || "application/octet-stream"}});
  const bmp = await createImageBitmap(file);
  Object.assign(S, {imageId: out.image_id, width: out.width, height: out.height, session: null});
  sizeCanvases(out.width, out.height);
  $("frame-canvas").getContext("2d").drawImage(bmp, 0, 0);
  setObjects([1]);
  status(`image ${out.width}x${out.height} ready (${out.image_id}): click on an object`);
  await render();
}

async function openSession(sess) {
  Object.assign(S, {session: sess, width: sess.width, height: sess.height, nframes: sess.frames, imageId: null});
  sizeCanvases(sess.width, sess.height);
  await render();
}

async function openVideo(file) {
  resetWork();
  status(`uploading ${file.name}...`);
  const sess = await api("/v1/videos", {method: "POST", body: file, headers: {"Content-Type": file.type || "video/mp4"}});
  setObjects([1]);
  await openSession(sess);
  status(`video: ${sess.frames} frames ${sess.width}x${sess.height} (${sess.session_id}); click objects, then Propagate`);
}

async function propagate() {
  const sid = S.session && S.session.session_id;
  if (!sid) throw new Error("open a video first");
  const prompts = [];
  for (const [k, c] of Object.entries(S.clicks)) {
    const [f, o] = k.split(":").map(Number);
    if (!c.points.length && !c.box) continue;
    const p = {object_id: o, frame: f};
    if (c.points.length) { p.points = c.points; p.labels = c.labels; }
    if (c.box) p.box = c.box;
    prompts.push(p);
  }
  if (!prompts.length) throw new Error("click on an object first");
  await api(`/v1/videos/${sid}/prompts`, {method: "POST", json: {prompts}});
  status("propagating...");
  const res = await api(`/v1/videos/${sid}/propagate`, {method: "POST", raw: true});
  const reader = res.body.getReader(), dec = new TextDecoder();
  let buf = "", n = 0;
  S.results = {};
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const fr = JSON.parse(line);
      if (fr.error) throw new Error("propagation failed: " + fr.error);
      S.results[fr.frame] = fr.objects; n++;
      status(`propagated ${n} / ${S.nframes} frames`);
      if (fr.frame === S.frame) await render();
    }
  }
  S.preview = {};
  setObjects([...S.objectIds, ...Object.values(S.results).flat().map((o) => o.object_id)]);
  status(`propagated ${n} frames`);
  await render();
}

// -- frames --------------------------------------------------------------------------------------
async function gotoFrame(f) {
  if (S.mode === "image") return;
  S.frame = Math.max(0, Math.min(S.nframes - 1, f));
  await loadJobMasks(S.frame);
  await render();
}

// -- wiring --------------------------------------------------------------------------------------
function init() {
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  $("image-file").addEventListener("change", (e) => e.target.files[0] && guard(() => openImage(e.target.files[0])));
  $("video-file").addEventListener("change", (e) => e.target.files[0] && guard(() => openVideo(e.target.files[0])));
  $("propagate").addEventListener("click", () => guard(propagate));
  $("output").addEventListener("change", () => guard(loadVideos));
  $("open-review").addEventListener("click", () => guard(openReview));
  $("save").addEventListener("click", () => guard(saveCorrections));
  $("queue").addEventListener("click", (e) => { const li = e.target.closest("li"); if (li) guard(() => gotoQueue(Number(li.dataset.i))); });
  $("queue-next").addEventListener("click", () => guard(() => gotoQueue(S.queueIndex + 1)));
  $("queue-prev").addEventListener("click", () => guard(() => gotoQueue(S.queueIndex - 1)));
  $("object").addEventListener("change", () => { S.objectId = Number($("object").value); $("label").value = S.labels[S.objectId] || ""; });
  $("new-object").addEventListener("click", () => selectObject(Math.max(0, ...S.objectIds) + 1));
  $("label").addEventListener("change", () => { S.labels[S.objectId] = $("label").value.trim(); setObjects(S.objectIds); });
  $("undo").addEventListener("click", () => {
    const c = S.clicks[key(S.frame, S.objectId)];
    if (!c) return;
    if (c.points.length) { c.points.pop(); c.labels.pop(); } else c.box = null;
    c.saved = false; guard(segment);
  });
  $("clear").addEventListener("click", () => { delete S.clicks[key(S.frame, S.objectId)]; delete S.preview[key(S.frame, S.objectId)]; guard(render); });
  $("prev").addEventListener("click", () => guard(() => gotoFrame(S.frame - 1)));
  $("next").addEventListener("click", () => guard(() => gotoFrame(S.frame + 1)));
  $("frame").addEventListener("input", () => guard(() => gotoFrame(Number($("frame").value))));
  const marks = $("marks");
  marks.addEventListener("mousedown", onDown);
  marks.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  marks.addEventListener("contextmenu", (e) => e.preventDefault());
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
    if (e.key === "ArrowRight") guard(() => gotoFrame(S.frame + 1));
    else if (e.key === "ArrowLeft") guard(() => gotoFrame(S.frame - 1));
    else if (e.key === "n") guard(() => gotoQueue(S.queueIndex + 1));
    else if (e.key === "p") guard(() => gotoQueue(S.queueIndex - 1));
  });
  window.addEventListener("resize", fit);
  setObjects([1]);
  api("/ui/api/config").then((c) => { $("model").textContent = "model: " + c.model; }).catch((e) => status(e.message, true));
}

init();
