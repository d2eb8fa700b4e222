// module_system dashboard: the batch form, the re-run and cancel buttons, and a run followed live
// through /api/v1/runs/{id}/events. The pages are complete without it; this only keeps them current.
"use strict";
document.documentElement.classList.add("js");

const STATUSES = ["uploaded", "skipped_same", "skipped_unchanged", "rejected", "failed"];
const HEADERS = {"Content-Type": "application/json", "X-Module-System-Dashboard": "1"};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function size(n) {
  let value = Number(n || 0);
  for (const unit of ["B", "KB", "MB", "GB", "TB"]) {
    if (value < 1024 || unit === "TB") return unit === "B" ? `${value.toFixed(0)} B` : `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} TB`;
}

function when(iso) {
  if (!iso) return "-";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$|Z$/, " UTC");
}

function badge(status) {
  return el("span", {class: `status status-${status}`}, status);
}

async function post(url, body) {
  const response = await fetch(url, {method: "POST", headers: HEADERS, credentials: "same-origin",
                                     body: body === undefined ? undefined : JSON.stringify(body)});
  let data = {};
  try { data = await response.json(); } catch (e) { data = {detail: response.statusText}; }
  if (!response.ok) {
    const wait = response.headers.get("Retry-After");
    throw new Error(`${response.status}: ${data.detail || response.statusText}${wait ? ` (retry in ${wait} s)` : ""}`);
  }
  return data;
}

// ---------------------------------------------------------------- the batch form

function setupSubmit() {
  const form = document.getElementById("submit-batch");
  if (!form) return;
  const error = document.getElementById("submit-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    let batch;
    try { batch = JSON.parse(document.getElementById("batch-json").value); }
    catch (e) { error.textContent = `not JSON: ${e.message}`; return; }
    const button = document.getElementById("submit-button");
    button.disabled = true;
    try {
      const accepted = await post(form.dataset.action, batch);
      window.location.assign(`/runs/${encodeURIComponent(accepted.run_id)}`);
    } catch (e) {
      error.textContent = e.message;
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- a run

function counts(target, values) {
  const node = document.getElementById(target);
  if (!node) return;
  node.replaceChildren(...Object.entries(values).filter(([, n]) => n).flatMap(
    ([status, n]) => [el("span", {class: `count status-${status}`}, `${n} ${status}`), " "]));
}

function jobRow(job) {
  const tbody = document.querySelector("#jobs tbody");
  let row = tbody.querySelector(`tr[data-job="${CSS.escape(job.job_id)}"]`);
  if (!row) {
    row = el("tr", {"data-job": job.job_id}, el("td", {class: "job"}, job.job_id), el("td", {}, job.service_id || ""),
             el("td", {class: "status-cell"}), el("td", {class: "n", "data-files": "uploaded"}, "0"),
             el("td", {class: "n", "data-files": "skipped"}, "0"), el("td", {class: "n", "data-files": "rejected"}, "0"),
             el("td", {class: "n", "data-files": "failed"}, "0"), el("td", {class: "n bytes"}, "0 B"),
             el("td", {class: "n"}, "-"), el("td", {class: "error"}));
    tbody.append(row);
  }
  return row;
}

function tallyJobs() {
  const tally = {};
  document.querySelectorAll("#jobs tbody .status-cell .status").forEach((node) => {
    tally[node.textContent] = (tally[node.textContent] || 0) + 1;
  });
  counts("run-jobs", tally);
}

function setJob(job) {
  const row = jobRow(job);
  if (job.status) {
    row.querySelector(".status-cell").replaceChildren(badge(job.status));
    tallyJobs();
  }
  if (job.files) {
    const f = job.files;
    row.querySelector('[data-files="uploaded"]').textContent = f.uploaded || 0;
    row.querySelector('[data-files="skipped"]').textContent = (f.skipped_same || 0) + (f.skipped_unchanged || 0);
    row.querySelector('[data-files="rejected"]').textContent = f.rejected || 0;
    row.querySelector('[data-files="failed"]').textContent = f.failed || 0;
  }
  if (job.bytes !== undefined) row.querySelector(".bytes").textContent = size(job.bytes);
  if (job.seconds !== undefined && job.seconds !== null) row.children[8].textContent = `${Number(job.seconds).toFixed(2)} s`;
  if (job.error !== undefined) row.querySelector(".error").textContent = job.error || "";
  if (job.id) row.querySelector(".job").replaceChildren(el("a", {href: `/jobs/${job.id}`}, job.job_id));
}

function fileLanded(data) {
  const row = jobRow({job_id: data.job_id});
  const column = data.status.startsWith("skipped") ? "skipped" : data.status;
  const cell = row.querySelector(`[data-files="${column}"]`);
  if (cell) cell.textContent = Number(cell.textContent || 0) + 1;
  if (data.status === "uploaded") {
    row.dataset.bytes = Number(row.dataset.bytes || 0) + data.size;
    row.querySelector(".bytes").textContent = size(row.dataset.bytes);
  }
}

function addEvent(data) {
  const list = document.getElementById("events");
  if (!list) return;
  if (list.children.length === 1 && list.children[0].classList.contains("muted")) list.replaceChildren();
  list.append(el("li", {class: "level-error"}, el("time", {}, when(new Date().toISOString())), " ",
                 el("b", {}, data.kind), data.job_id ? ` [${data.job_id}] ` : " ", data.message));
}

function drawChart(throughput) {
  const figure = document.getElementById("chart");
  if (!figure || !throughput) return;
  const ns = "http://www.w3.org/2000/svg";
  const width = 1000, height = 140, files = throughput.files || [];
  const peak = Math.max(0, ...files) || 1;
  const step = width / Math.max(1, files.length);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 -14 ${width} ${height + 30}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("role", "img");
  const line = document.createElementNS(ns, "line");
  Object.entries({x1: 0, y1: height, x2: width, y2: height, class: "axis"}).forEach(([k, v]) => line.setAttribute(k, v));
  svg.append(line);
  files.forEach((n, i) => {
    const rect = document.createElementNS(ns, "rect");
    const h = height * n / peak;
    Object.entries({x: (i * step).toFixed(1), y: (height - h).toFixed(1), width: Math.max(1, step - 1).toFixed(1),
                    height: h.toFixed(1)}).forEach(([k, v]) => rect.setAttribute(k, v));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${n} file(s), ${size((throughput.bytes || [])[i])} at +${(i * throughput.bucket_s).toFixed(1)} s`;
    rect.append(title);
    svg.append(rect);
  });
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", "label");
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.append(t);
  };
  label(0, -2, `peak ${Math.max(0, ...files)} file(s) / ${Number(throughput.bucket_s).toPrecision(3)} s`);
  label(width, height + 14, `${files.reduce((a, b) => a + b, 0)} file(s) in all`, "end");
  figure.replaceChildren(svg);
}

function renderDetail(detail) {
  const run = detail.run;
  document.getElementById("run-status").replaceWith(Object.assign(badge(run.status), {id: "run-status"}));
  document.getElementById("run-started").textContent = when(run.started_at);
  document.getElementById("run-finished").textContent = when(run.finished_at);
  document.getElementById("run-exit").textContent = run.exit_code === null ? "-" : run.exit_code;
  counts("run-jobs", run.jobs);
  counts("run-files", run.files);
  document.getElementById("run-bytes").textContent = size(run.bytes);
  detail.jobs.forEach(setJob);
  drawChart(detail.throughput);
  const events = document.getElementById("events");
  if (events && detail.events.length) {
    events.replaceChildren(...detail.events.map((e) => el("li", {class: `level-${e.level}`}, el("time", {}, when(e.at)),
      " ", el("b", {}, e.kind), e.job_id ? ` [${e.job_id}] ` : " ", e.message)));
  }
  const failed = detail.jobs.filter((j) => ["failed", "timed_out", "cancelled"].includes(j.status));
  const section = document.getElementById("failed");
  if (section && failed.length) {
    document.getElementById("failed-list").replaceChildren(...failed.map((j) => el("li", {},
      el("a", {href: `/jobs/${j.id}`}, j.job_id), " ", badge(j.status), ": ",
      el("span", {class: "error"}, j.error || "files failed or were rejected"))));
    section.hidden = false;
  }
}

async function refresh(runId) {
  const response = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}?buckets=60`, {credentials: "same-origin"});
  if (response.ok) renderDetail(await response.json());
}

function follow(runId) {
  const note = document.getElementById("live-note");
  const source = new EventSource(`/api/v1/runs/${encodeURIComponent(runId)}/events`);
  let lastRefresh = 0;
  const throttled = () => {
    const now = Date.now();
    if (now - lastRefresh > 3000) { lastRefresh = now; refresh(runId).catch(() => {}); }
  };
  const on = (kind, handler) => source.addEventListener(kind, (e) => handler(JSON.parse(e.data)));
  on("snapshot", (data) => { data.jobs.forEach(setJob); });
  on("job_started", (data) => { setJob({job_id: data.job_id, status: "running"}); throttled(); });
  on("file", fileLanded);
  on("job_finished", (data) => { setJob(data); throttled(); });
  on("error", addEvent);
  on("progress", (data) => {
    if (data.bytes !== undefined) document.getElementById("run-bytes").textContent = size(data.bytes);
    if (data.status === "running") {
      document.getElementById("run-status").replaceWith(Object.assign(badge("running"), {id: "run-status"}));
    }
    throttled();
  });
  on("run_finished", (data) => {
    source.close();
    (data.jobs || []).forEach(setJob);
    document.getElementById("run-status").replaceWith(Object.assign(badge(data.status), {id: "run-status"}));
    if (note) note.textContent = `The run is over: ${data.status}.`;
    if (data.error) addEvent({kind: "run_not_started", message: data.error});
    document.getElementById("cancel-run")?.remove();
    refresh(runId).catch(() => {});
  });
  source.onerror = () => { if (note && source.readyState === EventSource.CLOSED) note.textContent = "Live updates stopped; reload the page."; };
}

function setupRun() {
  const root = document.getElementById("run");
  if (!root) return;
  const runId = root.dataset.run;
  if (root.dataset.follow === "yes") follow(runId);
  const retry = document.getElementById("retry-failed");
  if (retry) {
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        const accepted = await post(`/api/v1/runs/${encodeURIComponent(runId)}/retry-failed`);
        window.location.assign(`/runs/${encodeURIComponent(accepted.run_id)}`);
      } catch (e) {
        document.getElementById("retry-error").textContent = e.message;
        retry.disabled = false;
      }
    });
  }
  const cancel = document.getElementById("cancel-run");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { await post(`/api/v1/runs/${encodeURIComponent(runId)}/cancel`); }
      catch (e) { document.getElementById("cancel-error").textContent = e.message; cancel.disabled = false; }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => { setupSubmit(); setupRun(); });
