// hqseg-ray review page, part 2: review a labeling job's output -- its videos, the review queue,
// the job's masks per frame, and saving corrections (OUT/corrections.jsonl) for the next run.
// Loaded before app.js; uses its globals (S, api, $, ...) only when called.
"use strict";

async function loadOutputs() {
  const cfg = await api("/ui/api/config");
  $("output").innerHTML = cfg.review_outputs.map((name, i) => `<option value="${i}">${esc(name)}</option>`).join("");
  if (!cfg.review_outputs.length) return status("this server has no review outputs (serve.review_outputs)", true);
  await loadVideos();
}

async function loadVideos() {
  const out = await api(`/ui/api/outputs/${$("output").value}/videos`);
  $("review-video").innerHTML = out.videos.map((v) =>
    `<option value="${esc(v.video_id)}" data-uri="${esc(v.uri || "")}" ${v.status !== "ok" ? "disabled" : ""}>${esc(v.video_id)} (${esc(v.status)}, ${v.low_confidence_frames ?? 0} low)</option>`).join("");
}

async function openReview() {
  const opt = $("review-video").selectedOptions[0];
  if (!opt) throw new Error("no video to open");
  resetWork();
  S.output = Number($("output").value); S.videoId = opt.value;
  status(`opening ${S.videoId}...`);
  const sess = await api("/v1/videos", {method: "POST", json: {uri: opt.dataset.uri}});
  const q = await api(`/ui/api/outputs/${S.output}/videos/${S.videoId}/queue`);
  S.queue = q.items;
  for (const it of q.items) if (it.label && it.object_id != null) S.labels[it.object_id] = it.label;
  $("queue-source").textContent = `(${q.total}, from the ${q.source})`;
  $("queue").innerHTML = q.items.map((it, i) =>
    `<li data-i="${i}" title="${esc(it.detail || "")}">frame ${it.frame_index}, object ${it.object_id ?? "-"}${it.label ? " (" + esc(it.label) + ")" : ""}: ${esc(it.reason)}${it.score != null ? " " + Number(it.score).toFixed(2) : ""}</li>`).join("");
  const saved = await api(`/ui/api/outputs/${S.output}/videos/${S.videoId}/corrections`);
  showSaved(saved.prompts);
  await openSession(sess);
  await loadJobMasks(S.frame);
  const ids = S.queue.map((it) => it.object_id).filter((o) => o != null);
  setObjects([...ids, ...(S.results[S.frame] || []).map((o) => o.object_id), 1]);
  status(`${S.videoId}: ${sess.frames} frames, ${S.queue.length} items to review`);
  if (S.queue.length) await gotoQueue(0); else await render();
}

async function loadJobMasks(frame) {
  if (S.mode !== "review" || S.results[frame]) return;
  const m = await api(`/ui/api/outputs/${S.output}/videos/${S.videoId}/frames/${frame}/masks`);
  S.results[frame] = m.objects;
  for (const o of m.objects) if (o.label && !S.labels[o.object_id]) S.labels[o.object_id] = o.label;
}

async function gotoQueue(i) {
  if (!S.queue.length) return;
  S.queueIndex = Math.max(0, Math.min(S.queue.length - 1, i));
  const it = S.queue[S.queueIndex];
  document.querySelectorAll("#queue li").forEach((li) => li.classList.toggle("current", Number(li.dataset.i) === S.queueIndex));
  if (it.object_id != null) selectObject(it.object_id);
  await gotoFrame(it.frame_index);
}

function showSaved(prompts) {
  S.saved = prompts;
  $("saved").textContent = prompts.length ? `${prompts.length} saved prompt(s):\n` + prompts.map((p) => `  frame ${p.frame}, object ${p.object_id}`).join("\n") : "";
}

async function saveCorrections() {
  if (S.output === null || !S.videoId) throw new Error("open a job's video first");
  const prompts = [];
  for (const [k, c] of Object.entries(S.clicks)) {
    if (c.saved || (!c.points.length && !c.box)) continue;
    const [f, o] = k.split(":").map(Number);
    const p = {object_id: o, frame: f};
    if (c.points.length) { p.points = c.points; p.labels = c.labels; }
    if (c.box) p.box = c.box;
    if (S.labels[o]) p.label = S.labels[o];
    prompts.push(p);
  }
  if (!prompts.length) throw new Error("nothing new to save: click on a frame first");
  const out = await api(`/ui/api/outputs/${S.output}/videos/${S.videoId}/corrections`, {method: "POST", json: {prompts}});
  for (const c of Object.values(S.clicks)) c.saved = true;
  showSaved(out.prompts);
  status(`saved ${out.saved} correction prompt(s) to ${out.file}; rerun the job with --corrections to apply them`);
}

