// fitcast web page: upload with progress, live job list, player with a lanczos/fitcast comparison.
// Plain browser JavaScript; hls.js is vendored (server/static/vendor), nothing is fetched from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => `/v1/assets${path}`;
let pollTimer = null;
let hls = null;

// ---- the API key (when the service requires one): kept for this tab only
function apiKey() {
  return sessionStorage.getItem("fitcast-key") || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function apiFetch(path, init = {}) {
  return fetch(api(path), { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
}

function setupKey() {
  $("key-input").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("fitcast-key", $("key-input").value.trim());
    $("key-status").textContent = apiKey() ? "key set" : "no key";
    route();
  });
}

// A text cell (never HTML: asset ids, stages and errors come from the server and uploads)
function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function problemText(xhrOrBody) {
  try {
    const body = typeof xhrOrBody === "string" ? JSON.parse(xhrOrBody) : xhrOrBody;
    return `${body.title}: ${body.detail || ""}`;
  } catch (e) {
    return "upload failed";
  }
}

// ---- upload (XHR, for the upload progress events)
function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  const params = new URLSearchParams({ preset: $("upload-preset").value, scale: $("upload-scale").value,
    playback: $("upload-signed").checked ? "signed" : "public" });
  const xhr = new XMLHttpRequest();
  xhr.open("POST", api(`?${params}`));
  xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
  for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) $("upload-progress").value = Math.round((100 * e.loaded) / e.total);
  };
  xhr.onload = () => {
    if (xhr.status === 202 || xhr.status === 200) {
      $("upload-progress").value = 100;
      $("upload-status").textContent = `uploaded: ${JSON.parse(xhr.responseText).id}`;
      refreshList();
    } else {
      $("upload-status").textContent = problemText(xhr.responseText);
    }
    $("upload-button").disabled = false;
  };
  xhr.onerror = () => {
    $("upload-status").textContent = "network error";
    $("upload-button").disabled = false;
  };
  $("upload-button").disabled = true;
  $("upload-progress").value = 0;
  $("upload-status").textContent = "uploading…";
  xhr.send(file);
}

// ---- the asset list, with live job progress
async function refreshList() {
  const res = await apiFetch("?limit=100");
  if (!res.ok) {
    $("assets-empty").hidden = false;
    $("assets-empty").textContent = problemText(await res.json());
    return;
  }
  const { items } = await res.json();
  const body = $("assets").querySelector("tbody");
  body.replaceChildren(
    ...items
      .slice()
      .reverse()
      .map((a) => {
        const tr = document.createElement("tr");
        tr.dataset.id = a.id;
        tr.dataset.status = a.status;
        const pct = Math.round(100 * (a.status === "ready" ? 1 : a.progress.fraction || 0));
        const err = a.error ? ` — ${a.error.detail || a.error.title}` : "";
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = pct;
        const progress = cell(` ${pct}%`);
        progress.prepend(bar);
        const open = cell("");
        if (a.status === "ready") {
          const link = document.createElement("a");
          link.className = "open";
          link.href = `#/assets/${encodeURIComponent(a.id)}`;
          link.textContent = "open";
          open.append(link);
        }
        tr.append(cell(a.id, "mono"), cell(`${a.status}${err}`, `status ${a.status}`), cell(a.progress.stage || ""),
          progress, open);
        return tr;
      })
  );
  $("assets-empty").hidden = items.length > 0;
  $("assets-empty").textContent = "No assets yet.";
}

// ---- the player view: every file is opened with a playback token (a signed asset needs it)
let token = "";
const withToken = (path) => api(`${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`);

function frameUrl(id, mode) {
  const seg = $("cmp-segment").value || 0;
  const frame = $("cmp-frame").value || 0;
  return withToken(`/${id}/compare?segment=${seg}&frame=${frame}&mode=${mode}`);
}

function loadComparison(id) {
  for (const mode of ["lanczos", "fitcast"]) {
    const url = frameUrl(id, mode);
    $(`cmp-${mode}`).src = url;
    $(`slider-${mode}`).src = url;
  }
}

function kbit(bits) {
  return `${(bits / 1000).toFixed(0)} kbit`;
}

async function openPlayer(id) {
  $("library-view").hidden = true;
  $("player-view").hidden = false;
  $("player-title").textContent = id;
  const grant = await apiFetch(`/${id}/playback-token`, { method: "POST" });
  if (!grant.ok) {
    $("quality").textContent = problemText(await grant.json());
    return;
  }
  token = (await grant.json()).token;
  const video = $("lr-video");
  const src = withToken(`/${id}/hls/master.m3u8`);
  if (hls) hls.destroy();
  $("rung").textContent = "";
  if (window.Hls && Hls.isSupported()) {
    hls = new Hls();
    hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => showRung(data.level));
    hls.loadSource(src);
    hls.attachMedia(video);
  } else {
    video.src = src; // Safari plays HLS natively
  }
  const ladder = await fetch(withToken(`/${id}/sr/ladder.json`));
  $("compare-card").hidden = $("plot-card").hidden = ladder.ok;
  if (ladder.ok) {
    showLadder(await ladder.json());
    return;
  }
  $("psnr-plot").src = withToken(`/${id}/report/psnr.png`);
  const manifest = await (await fetch(withToken(`/${id}/sr/manifest.json`))).json();
  const bits = manifest.bits;
  const total = Object.values(bits).reduce((s, v) => s + v, 0);
  $("bits").querySelector("tbody").replaceChildren(
    ...Object.entries(bits).map(([k, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = k;
      tr.append(th, cell(kbit(v)), cell(`${((100 * v) / total).toFixed(1)} %`));
      return tr;
    })
  );
  const q = await fetch(withToken(`/${id}/report/quality.json`));
  if (q.ok) {
    const r = await q.json();
    $("quality").textContent = `PSNR-Y: lanczos ${r.psnr_y_lanczos.toFixed(2)} dB, fitcast ${r.psnr_y_sr.toFixed(2)} dB ` +
      `(${(r.psnr_y_sr - r.psnr_y_lanczos >= 0 ? "+" : "")}${(r.psnr_y_sr - r.psnr_y_lanczos).toFixed(2)} dB), ` +
      `${manifest.lr[0]}x${manifest.lr[1]} → ${manifest.hr[0]}x${manifest.hr[1]}, method ${manifest.method}`;
  }
  $("cmp-segment").max = manifest.segments.length - 1;
  $("cmp-frame").max = manifest.segments[0].frames - 1;
  $("cmp-segment").onchange = $("cmp-frame").onchange = () => loadComparison(id);
  loadComparison(id);
}

// The rendition hls.js plays now (a ladder's rung; 1 of 1 for a single rendition)
function showRung(level) {
  const levels = hls ? hls.levels : [];
  const l = levels[level];
  if (!l) return;
  $("rung").dataset.level = String(level);
  $("rung").textContent = `playing rendition ${level + 1} of ${levels.length}: ${l.width}x${l.height}, ` +
    `${(l.bitrate / 1000).toFixed(0)} kbit/s video` + (levels.length > 1 ? " (hls.js chooses by bandwidth)" : "");
}

// A ladder: every rung, its total rate (models and labels counted) and its delivered quality
function showLadder(ladder) {
  $("bits").querySelector("tbody").replaceChildren(
    ...ladder.rungs.map((r) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = r.name;
      const seconds = r.segments.reduce((s, seg) => s + seg.duration, 0);
      const total = Object.values(r.bits).reduce((s, v) => s + v, 0);
      tr.append(th, cell(`${r.width}x${r.height}`), cell(`${(total / seconds / 1000).toFixed(0)} kbit/s`),
        cell(`${r.psnr_y.toFixed(2)} dB` + (r.psnr_y_lanczos != null ? ` (lanczos ${r.psnr_y_lanczos.toFixed(2)})` : "")));
      return tr;
    })
  );
  $("quality").textContent = `ABR ladder of ${ladder.rungs.length} rungs at ${ladder.hr[0]}x${ladder.hr[1]}: ` +
    "each low rung ships its own models; `fitcast play` upscales the rung it plays, a plain HLS player shows it as sent.";
}

function showLibrary() {
  if (hls) {
    hls.destroy();
    hls = null;
  }
  $("player-view").hidden = true;
  $("library-view").hidden = false;
  refreshList();
}

function route() {
  const m = location.hash.match(/^#\/assets\/([a-z0-9]+)$/);
  if (m) openPlayer(m[1]);
  else showLibrary();
}

function setupSlider() {
  const apply = () => {
    $("slider-clip").style.width = `${$("slider-pos").value}%`;
  };
  $("slider-pos").oninput = apply;
  apply();
  $("cmp-view").onchange = () => {
    const slider = $("cmp-view").value === "slider";
    $("cmp-slider").hidden = !slider;
    $("cmp-side").hidden = slider;
  };
}

$("upload-form").addEventListener("submit", upload);
setupKey();
window.addEventListener("hashchange", route);
setupSlider();
route();
pollTimer = setInterval(() => {
  if (!$("library-view").hidden) refreshList();
}, 1000);
