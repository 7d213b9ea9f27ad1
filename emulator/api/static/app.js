// The device console: polls the status, shows the HDMI stream, log tails and the app's storage.
// No build step and no dependencies. A token given once as ?token= is kept in sessionStorage and sent as
// "Authorization: Bearer" on every request (so the HDMI stream is read with fetch, not by an <img> URL).
"use strict";

const TOKEN_KEY = "panorama-emulator-token";
const $ = (id) => document.getElementById(id);

(function takeTokenFromUrl() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return;
  sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
})();

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

async function api(method, path, body) {
  const options = { method, headers: authHeaders(), cache: "no-store" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("this server needs a token");
  }
  if (!response.ok) {
    let detail = response.status + " " + response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

const getJson = async (path) => (await api("GET", path)).json();

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + (s % 60) + "s";
}

function formatSize(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
  return (bytes / 1024 / 1024).toFixed(1) + " MiB";
}

// --- status ---------------------------------------------------------------------------------------------

let lastStatus = null;

function renderStatus(status) {
  lastStatus = status;
  $("device").textContent = status.device;
  const badge = $("state");
  badge.textContent = status.state;
  badge.className = "badge " + status.state;
  $("boots").textContent = status.boots;
  $("uptime").textContent = formatSeconds(status.uptime);
  $("app").textContent = status.app ? status.app.name + " (" + status.app.source + ")" : "no app deployed";
  $("reboot").disabled = $("power-cut").disabled = $("shutdown").disabled = status.state !== "running";
  $("boot").disabled = status.state !== "off";
  $("remove").disabled = status.state === "empty";
  $("frames").textContent = status.hdmi ? status.hdmi.outputs + " frames" : "no HDMI output";

  const nodes = $("nodes").tBodies[0];
  nodes.replaceChildren();
  for (const node of status.nodes) {
    const row = nodes.insertRow();
    cell(row, node.name);
    cell(row, node.state, "state-" + node.state);
    cell(row, node.pid);
    cell(row, node.restarts);
    cell(row, node.exit_codes.slice(-5).join(" ") || "–");
    cell(row, node.arch ? node.arch + (node.emulated ? " (qemu-user)" : "") : "–");
  }

  const select = $("log-node");
  const names = status.nodes.map((node) => node.name);
  if (select.options.length !== names.length || names.some((name, i) => select.options[i].value !== name)) {
    const chosen = select.value;
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(chosen)) select.value = chosen;
  }

  const cameras = $("cameras").tBodies[0];
  cameras.replaceChildren();
  for (const camera of status.cameras) {
    const row = cameras.insertRow();
    row.dataset.camera = camera.name;
    cell(row, camera.name);
    cell(row, camera.source, "wrap");
    cell(row, camera.paused ? "paused" : "live");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = camera.paused ? "Resume" : "Pause";
    button.className = "camera-toggle";
    button.disabled = status.state !== "running";
    button.onclick = () => act(camera.paused ? "resume" : "pause", "/api/cameras/" +
      encodeURIComponent(camera.name) + "/" + (camera.paused ? "resume" : "pause"));
    row.insertCell().append(button);
  }
}

async function refreshStatus() {
  try {
    renderStatus(await getJson("/api/status"));
    if ($("message").textContent === "cannot reach the device API") say("");
  } catch (error) {
    say(error.message === "Failed to fetch" ? "cannot reach the device API" : error.message, true);
  }
}

async function act(label, path, method = "POST", body = undefined) {
  say(label + "…");
  try {
    const response = await api(method, path, body);
    const result = await response.json();
    say("");
    if (result && result.device) renderStatus(result);
    else refreshStatus();
    refreshStorage();
  } catch (error) {
    say(label + " failed: " + error.message, true);
  }
}

// --- HDMI -----------------------------------------------------------------------------------------------

let hdmiUrl = null;
let hdmiBusy = false;

// Each frame is decoded off-screen and then swapped in, so the view never shows a half-loaded image.
// A frame that arrives while the previous one is still decoding is dropped.
async function showFrame(bytes) {
  if (hdmiBusy) return;
  hdmiBusy = true;
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
  try {
    const next = new Image();
    next.src = url;
    await next.decode();
    const image = $("hdmi");
    next.id = image.id;
    next.alt = image.alt;
    next.className = image.className;
    next.dataset.frames = String(Number(image.dataset.frames) + 1);
    image.replaceWith(next);
    if (hdmiUrl) URL.revokeObjectURL(hdmiUrl);
    hdmiUrl = url;
  } catch (error) {
    URL.revokeObjectURL(url);
  } finally {
    hdmiBusy = false;
  }
}

function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// Reads the multipart/x-mixed-replace stream part by part (each part has a Content-Length header).
async function followHdmi() {
  const endOfHeaders = new TextEncoder().encode("\r\n\r\n");
  for (;;) {
    try {
      if (!lastStatus || !lastStatus.hdmi || lastStatus.state !== "running") throw new Error("no HDMI output");
      const response = await api("GET", "/api/hdmi.mjpeg?quality=75");
      const reader = response.body.getReader();
      let buffer = new Uint8Array(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buffer.length + value.length);
        joined.set(buffer);
        joined.set(value, buffer.length);
        buffer = joined;
        for (;;) {
          const end = indexOf(buffer, endOfHeaders, 0);
          if (end < 0) break;
          const headers = new TextDecoder().decode(buffer.subarray(0, end));
          const match = /content-length:\s*(\d+)/i.exec(headers);
          if (!match) { buffer = buffer.subarray(end + 4); continue; }
          const length = Number(match[1]);
          if (buffer.length < end + 4 + length) break;
          showFrame(buffer.slice(end + 4, end + 4 + length));
          buffer = buffer.subarray(end + 4 + length);
        }
      }
    } catch (error) {
      /* no app, shut down, or the stream broke: try again shortly */
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// --- logs -----------------------------------------------------------------------------------------------

async function refreshLogs() {
  const node = $("log-node").value;
  const box = $("logs");
  if (!node) { box.textContent = ""; return; }
  const fileSelect = $("log-file");
  const file = fileSelect.value || "console_output";
  try {
    const tail = await getJson("/api/nodes/" + encodeURIComponent(node) + "/logs?lines=200&file=" +
      encodeURIComponent(file));
    if (tail.files.join("\n") !== Array.from(fileSelect.options, (option) => option.value).join("\n")) {
      fileSelect.replaceChildren(...tail.files.map((name) => new Option(name, name)));
      fileSelect.value = tail.files.includes(file) ? file : "console_output";
    }
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = tail.lines.join("\n");
    if (atBottom) box.scrollTop = box.scrollHeight;
  } catch (error) {
    box.textContent = error.message;
  }
}

// --- storage --------------------------------------------------------------------------------------------

let storagePath = "";

async function download(path) {
  try {
    const response = await api("GET", "/api/storage/file?path=" + encodeURIComponent(path));
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = path.split("/").pop();
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    say("download failed: " + error.message, true);
  }
}

async function refreshStorage() {
  const body = $("storage").tBodies[0];
  $("storage-path").textContent = "/" + storagePath;
  if (!lastStatus || lastStatus.state === "empty") { body.replaceChildren(); return; }
  try {
    const listing = await getJson("/api/storage?path=" + encodeURIComponent(storagePath));
    body.replaceChildren();
    for (const entry of listing.entries) {
      const row = body.insertRow();
      const name = row.insertCell();
      if (entry.kind === "dir" || entry.kind === "file") {
        const link = document.createElement("a");
        link.textContent = entry.name + (entry.kind === "dir" ? "/" : "");
        link.onclick = () => {
          if (entry.kind === "dir") { storagePath = entry.path; refreshStorage(); } else download(entry.path);
        };
        name.append(link);
      } else {
        name.textContent = entry.name + " (" + entry.kind + ")";
      }
      cell(row, entry.kind === "file" ? formatSize(entry.size) : "");
      cell(row, new Date(entry.modified * 1000).toLocaleString());
    }
  } catch (error) {
    body.replaceChildren();
    cell(body.insertRow(), error.message);
  }
}

// --- wiring ---------------------------------------------------------------------------------------------

function wire() {
  $("reboot").onclick = () => act("reboot", "/api/device/reboot");
  $("power-cut").onclick = () => act("power cut", "/api/device/power-cut");
  $("shutdown").onclick = () => act("shutdown", "/api/device/shutdown");
  $("boot").onclick = () => act("boot", "/api/device/boot");
  $("remove").onclick = () => act("remove", "/api/app", "DELETE");
  $("log-node").onchange = () => { $("log-file").value = "console_output"; refreshLogs(); };
  $("log-file").onchange = refreshLogs;
  $("storage-refresh").onclick = refreshStorage;
  $("storage-up").onclick = () => {
    storagePath = storagePath.split("/").slice(0, -1).join("/");
    refreshStorage();
  };
  $("deploy-form").onsubmit = (event) => {
    event.preventDefault();
    const project = $("deploy-project").value.trim();
    if (project) act("deploy", "/api/app", "POST", { project });
  };
  $("token-form").onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-form").hidden = true;
    say("");
    refreshStatus().then(refreshStorage);
  };
}

wire();
// --- CloudWatch metrics the app put (--aws local) ---------------------------------------------------------

function renderCloudWatch(metrics) {
  const aws = (metrics.runtime || {}).aws;
  const cloudwatch = aws && aws.cloudwatch;
  $("cloudwatch-box").hidden = !cloudwatch;
  if (!cloudwatch) return;
  const body = $("cloudwatch").tBodies[0];
  body.replaceChildren();
  for (const [key, series] of Object.entries(cloudwatch.series)) {
    const row = body.insertRow();
    row.dataset.metric = key;
    cell(row, key, "wrap");
    cell(row, series.unit || "–");
    cell(row, series.samples);
    cell(row, series.last);
    cell(row, series.sum);
  }
}

async function refreshCloudWatch() {
  try {
    renderCloudWatch(await getJson("/api/metrics"));
  } catch (error) { /* the status poll reports an unreachable API */ }
}

refreshStatus().then(() => { refreshStorage(); refreshLogs(); });
setInterval(refreshStatus, 1000);
setInterval(refreshCloudWatch, 2000);
setInterval(refreshLogs, 2000);
followHdmi();
