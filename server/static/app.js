// fitcast web page: upload with progress, live job list, player with a lanczos/fitcast comparison.
// Plain browser JavaScript; hls.js is vendored (server/static/vendor), nothing is fetched from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => `/v1/assets${path}`;
let pollTimer = null;
let hls = null;

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
  const params = new URLSearchParams({ preset: $("upload-preset").value, scale: $("upload-scale").value });
  const xhr = new XMLHttpRequest();
  xhr.open("POST", api(`?${params}`));
  xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
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
  const res = await fetch(api("?limit=100"));
  if (!res.ok) return;
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
        const open = a.status === "ready" ? `<a class="open" href="#/assets/${a.id}">open</a>` : "";
        const err = a.error ? ` — ${a.error.detail || a.error.title}` : "";
        tr.innerHTML = `<td class="mono">${a.id}</td><td class="status ${a.status}">${a.status}${err}</td>
          <td>${a.progress.stage || ""}</td><td><progress max="100" value="${pct}"></progress> ${pct}%</td><td>${open}</td>`;
        return tr;
      })
  );
  $("assets-empty").hidden = items.length > 0;
}

// ---- the player view
function frameUrl(id, mode) {
  const seg = $("cmp-segment").value || 0;
  const frame = $("cmp-frame").value || 0;
  return api(`/${id}/compare?segment=${seg}&frame=${frame}&mode=${mode}`);
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
  const video = $("lr-video");
  const src = api(`/${id}/hls/master.m3u8`);
  if (hls) hls.destroy();
  if (window.Hls && Hls.isSupported()) {
    hls = new Hls();
    hls.loadSource(src);
    hls.attachMedia(video);
  } else {
    video.src = src; // Safari plays HLS natively
  }
  $("psnr-plot").src = api(`/${id}/report/psnr.png`);
  const manifest = await (await fetch(api(`/${id}/sr/manifest.json`))).json();
  const bits = manifest.bits;
  const total = Object.values(bits).reduce((s, v) => s + v, 0);
  $("bits").querySelector("tbody").replaceChildren(
    ...Object.entries(bits).map(([k, v]) => {
      const tr = document.createElement("tr");
      tr.innerHTML = `<th>${k}</th><td>${kbit(v)}</td><td>${((100 * v) / total).toFixed(1)} %</td>`;
      return tr;
    })
  );
  const q = await fetch(api(`/${id}/report/quality.json`));
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
window.addEventListener("hashchange", route);
setupSlider();
route();
pollTimer = setInterval(() => {
  if (!$("library-view").hidden) refreshList();
}, 1000);
