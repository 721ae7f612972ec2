/* The monitoring dashboard: history from GET /api/monitoring/series/, the current figures from
 * the /ws/monitoring/ socket, or from GET /api/monitoring/latest/ when no push arrives.
 *
 * Why polling is not just an error path: pushes come from the Celery worker through the channel
 * layer. With REDIS_URL (the full stack) worker and Daphne share Redis and pushes arrive. On the
 * embedded defaults each process has its own in-memory channel layer, so the worker's pushes
 * never reach Daphne: the socket connects and sends its snapshot, then stays silent. The page
 * therefore polls whenever no push has arrived for two sampling intervals, socket or not.
 */
(function () {
  "use strict";

  var root = document.getElementById("monitoring");
  if (!root || !window.MonCharts) return;

  var interval = parseFloat(root.dataset.interval) || 5;
  var latestUrl = root.dataset.latestUrl;
  var seriesUrl = root.dataset.seriesUrl;
  var wsPath = root.dataset.wsPath;
  var SERIES_REFRESH_MS = 60 * 1000;
  var RECONNECT_MS = 30 * 1000;
  var CLOSE_UNAUTHENTICATED = 4401;

  var state = {
    windowS: 3600,
    resolution: interval,
    host: null,
    // host -> {points: [...], gpus: {key: {label, points: [...]}}}
    history: {},
    // host -> the latest sample (the shape of /api/monitoring/latest/)
    latest: {},
    socketOpen: false,
    lastPushAt: 0,
    authLost: false,
    error: null,
  };

  var $ = function (id) { return document.getElementById(id); };
  var hostSelect = $("mon-host");
  var windowSelect = $("mon-window");

  function fetchJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          state.authLost = true;
          throw new Error("not logged in");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  function gpuKey(gpu) { return gpu.index + "|" + (gpu.uuid || ""); }
  function gpuLabel(gpu) { return "GPU " + gpu.index + (gpu.name ? " " + gpu.name : ""); }

  function hostEntry(host) {
    if (!state.history[host]) state.history[host] = { points: [], gpus: {} };
    return state.history[host];
  }

  // ---- data in

  function loadSeries() {
    var until = new Date();
    var since = new Date(until.getTime() - state.windowS * 1000);
    var url = seriesUrl + "?since=" + encodeURIComponent(since.toISOString()) +
      "&until=" + encodeURIComponent(until.toISOString());
    return fetchJson(url).then(function (data) {
      state.resolution = data.resolution;
      state.history = {};
      data.hosts.forEach(function (host) {
        var entry = hostEntry(host.host);
        entry.points = host.points.map(function (p) { return Object.assign({}, p, { t: Date.parse(p.t) }); });
        host.gpus.forEach(function (gpu) {
          entry.gpus[gpuKey(gpu)] = {
            label: gpuLabel(gpu),
            points: gpu.points.map(function (p) { return Object.assign({}, p, { t: Date.parse(p.t) }); }),
          };
        });
      });
      state.error = null;
    });
  }

  function ingest(sample) {
    var previous = state.latest[sample.host];
    if (previous && Date.parse(previous.taken_at) >= Date.parse(sample.taken_at)) return;
    state.latest[sample.host] = sample;
    var t = Date.parse(sample.taken_at);
    var entry = hostEntry(sample.host);
    var lastT = entry.points.length ? entry.points[entry.points.length - 1].t : 0;
    if (t > lastT) {
      entry.points.push({
        t: t, ram_used_mb: sample.ram_used_mb, ram_percent: sample.ram_percent,
        ram_total_mb: sample.ram_total_mb, cpu_percent: sample.cpu_percent,
      });
    }
    sample.gpus.forEach(function (gpu) {
      var key = gpuKey(gpu);
      if (!entry.gpus[key]) entry.gpus[key] = { label: gpuLabel(gpu), points: [] };
      var points = entry.gpus[key].points;
      if (!points.length || points[points.length - 1].t < t) {
        points.push({
          t: t, memory_used_mb: gpu.memory_used_mb, utilization_percent: gpu.utilization_percent,
          temperature_c: gpu.temperature_c, power_draw_w: gpu.power_draw_w,
        });
      }
    });
    trim(entry);
  }

  function trim(entry) {
    var cutoff = Date.now() - state.windowS * 1000;
    var keep = function (p) { return p.t >= cutoff; };
    entry.points = entry.points.filter(keep);
    Object.keys(entry.gpus).forEach(function (key) {
      entry.gpus[key].points = entry.gpus[key].points.filter(keep);
    });
  }

  function pollLatest() {
    return fetchJson(latestUrl).then(function (data) {
      data.hosts.forEach(ingest);
      state.error = null;
    });
  }

  // ---- the socket, with polling whenever pushes are not arriving

  function connect() {
    if (!("WebSocket" in window) || state.authLost) return;
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket;
    try {
      socket = new WebSocket(proto + "//" + window.location.host + wsPath);
    } catch (err) {
      window.setTimeout(connect, RECONNECT_MS);
      return;
    }
    socket.onopen = function () { state.socketOpen = true; render(); };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      if (message.type === "monitoring.snapshot") {
        message.samples.forEach(ingest);
      } else if (message.type === "monitoring.sample") {
        state.lastPushAt = Date.now();
        ingest(message.sample);
      }
      render();
    };
    socket.onclose = function (event) {
      state.socketOpen = false;
      if (event.code === CLOSE_UNAUTHENTICATED) {
        state.authLost = true;
      } else {
        window.setTimeout(connect, RECONNECT_MS);
      }
      render();
    };
  }

  function pushesArriving() {
    return state.socketOpen && Date.now() - state.lastPushAt < 2 * interval * 1000;
  }

  function tick() {
    if (state.authLost || pushesArriving()) { render(); return; }
    pollLatest().catch(function (err) { state.error = err.message; }).then(render);
  }

  // ---- rendering

  function figure(list, term, value) {
    var dt = document.createElement("dt");
    dt.textContent = term;
    var dd = document.createElement("dd");
    dd.textContent = value;
    list.appendChild(dt);
    list.appendChild(dd);
  }

  function fmt(v, unit) {
    return v === null || v === undefined ? "–" : window.MonCharts.formatNumber(v) + (unit ? " " + unit : "");
  }

  function gb(bytes) {
    return bytes === null || bytes === undefined ? "–" : (bytes / 1073741824).toFixed(2) + " GB";
  }

  function table(headers, rows) {
    var tableEl = document.createElement("table");
    tableEl.className = "mon-table";
    var head = tableEl.createTHead().insertRow();
    headers.forEach(function (h) {
      var th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    });
    var body = tableEl.createTBody();
    rows.forEach(function (cells) {
      var tr = body.insertRow();
      cells.forEach(function (cell) { tr.insertCell().textContent = cell; });
    });
    return tableEl;
  }

  function renderHosts() {
    var hosts = Object.keys(Object.assign({}, state.history, state.latest)).sort();
    if (!state.host || hosts.indexOf(state.host) < 0) state.host = hosts[0] || null;
    var current = Array.prototype.map.call(hostSelect.options, function (o) { return o.value; });
    if (current.join("\n") !== hosts.join("\n")) {
      hostSelect.textContent = "";
      hosts.forEach(function (h) {
        var option = document.createElement("option");
        option.value = h;
        option.textContent = h;
        hostSelect.appendChild(option);
      });
    }
    if (state.host) hostSelect.value = state.host;
    $("mon-empty").hidden = hosts.length > 0;
  }

  function renderNow(sample) {
    var list = $("mon-host-now");
    list.textContent = "";
    var gpuBox = $("mon-gpu-now");
    gpuBox.textContent = "";
    if (!sample) return;
    var age = Math.max(0, (Date.now() - Date.parse(sample.taken_at)) / 1000);
    figure(list, "Sample", Math.round(age) + " s ago" + (age > 3 * interval ? " (stale: is this machine's worker running?)" : ""));
    figure(list, "RAM", fmt(sample.ram_used_mb, "MB") + " of " + fmt(sample.ram_total_mb, "MB") + " (" + fmt(sample.ram_percent, "%") + ")");
    figure(list, "Swap", fmt(sample.swap_used_mb, "MB") + " of " + fmt(sample.swap_total_mb, "MB"));
    figure(list, "CPU", fmt(sample.cpu_percent, "%") + (sample.cpu_count ? " of " + sample.cpu_count + " CPUs" : ""));
    figure(list, "Load", [sample.load_1, sample.load_5, sample.load_15].map(function (v) { return fmt(v); }).join(" / "));
    figure(list, "Ollama RSS", fmt(sample.ollama_rss_mb, "MB") + " (" + sample.ollama_process_count + " processes)");

    if (!sample.gpu_available) {
      var note = document.createElement("p");
      note.className = "mon-note";
      note.textContent = "No GPU figures: " + (sample.gpu_reason || "unavailable");
      gpuBox.appendChild(note);
    }
    if (sample.gpus.length) {
      gpuBox.appendChild(table(
        ["GPU", "Memory", "Util.", "Mem. util.", "Temp.", "Power"],
        sample.gpus.map(function (g) {
          return [
            gpuLabel(g),
            fmt(g.memory_used_mb, "MB") + " / " + fmt(g.memory_total_mb, "MB"),
            fmt(g.utilization_percent, "%"),
            fmt(g.memory_utilization_percent, "%"),
            fmt(g.temperature_c, "°C"),
            fmt(g.power_draw_w, "W") + " / " + fmt(g.power_limit_w, "W"),
          ];
        })
      ));
    }
  }

  function renderModels(sample) {
    var box = $("mon-models");
    box.textContent = "";
    if (!sample) return;
    if (!sample.ollama.length) {
      var none = document.createElement("p");
      none.className = "mon-note";
      none.textContent = "This machine asks no Ollama server (TELEMETRY_OLLAMA_URLS).";
      box.appendChild(none);
    }
    sample.ollama.forEach(function (server) {
      var heading = document.createElement("h3");
      heading.textContent = server.url + (server.available ? "" : " — unavailable: " + (server.reason || "?"));
      box.appendChild(heading);
      if (!server.available) return;
      if (!server.models.length) {
        var empty = document.createElement("p");
        empty.className = "mon-note";
        empty.textContent = "No model loaded.";
        box.appendChild(empty);
        return;
      }
      box.appendChild(table(
        ["Model", "Size", "In GPU memory", "Unloads"],
        server.models.map(function (m) {
          var share = m.size ? " (" + Math.round((100 * (m.size_vram || 0)) / m.size) + " %)" : "";
          return [m.name, gb(m.size), gb(m.size_vram) + share, m.expires_at ? new Date(m.expires_at).toLocaleString() : "–"];
        })
      ));
    });
  }

  // A host without an NVIDIA GPU (its latest sample says so and the window holds no GPU figure)
  // gets one card that says so instead of the GPUs card and four empty GPU charts. A GPU that
  // vanished mid-window (a driver reset) keeps its charts: their history still tells something.
  function hostHasNoGpu(sample, entry) {
    if (!sample || sample.gpu_available || sample.gpus.length) return false;
    return !Object.keys(entry.gpus).some(function (key) { return entry.gpus[key].points.length > 0; });
  }

  function renderGpuPresence(sample) {
    var entry = state.history[state.host] || { points: [], gpus: {} };
    var none = hostHasNoGpu(sample, entry);
    $("mon-no-gpu").hidden = !none;
    $("mon-gpu-card").hidden = none;
    Array.prototype.forEach.call(root.querySelectorAll("[data-gpu-chart]"), function (chart) { chart.hidden = none; });
    if (none) {
      $("mon-no-gpu-host").textContent = sample.host;
      $("mon-no-gpu-reason").textContent = sample.gpu_reason ? "The probe says: " + sample.gpu_reason + "." : "";
    }
    return none;
  }

  function renderCharts() {
    var entry = state.history[state.host] || { points: [], gpus: {} };
    var tMax = Date.now();
    var tMin = tMax - state.windowS * 1000;
    var gapMs = 3 * Math.max(state.resolution || interval, interval) * 1000;
    var gpuKeys = Object.keys(entry.gpus).sort();
    var gpuSeries = function (field) {
      return gpuKeys.map(function (key) {
        var gpu = entry.gpus[key];
        return { label: gpu.label, points: gpu.points.map(function (p) { return { t: p.t, v: p[field] }; }) };
      });
    };
    var hostSeries = function (field, label) {
      return [{ label: label, points: entry.points.map(function (p) { return { t: p.t, v: p[field] }; }) }];
    };
    var draw = function (id, series, extra) {
      window.MonCharts.lineChart($(id), Object.assign({ series: series, tMin: tMin, tMax: tMax, gapMs: gapMs }, extra || {}));
    };
    if (!renderGpuPresence(state.host ? state.latest[state.host] : null)) {
      draw("chart-gpu-memory", gpuSeries("memory_used_mb"), { unit: "MB" });
      draw("chart-gpu-util", gpuSeries("utilization_percent"), { yMax: 100, unit: "%" });
      draw("chart-gpu-temp", gpuSeries("temperature_c"), { unit: "°C" });
      draw("chart-gpu-power", gpuSeries("power_draw_w"), { unit: "W" });
    }
    draw("chart-ram", hostSeries("ram_used_mb", "RAM used"), { unit: "MB" });
    draw("chart-cpu", hostSeries("cpu_percent", "CPU"), { yMax: 100, unit: "%" });
  }

  function renderStatus() {
    var status = $("mon-status");
    if (state.authLost) {
      status.textContent = "Not logged in: reload the page to log in again.";
    } else if (state.error) {
      status.textContent = "Cannot reach the server (" + state.error + "); retrying every " + interval + " s.";
    } else if (pushesArriving()) {
      status.textContent = "Live (WebSocket)";
    } else {
      status.textContent = "Polling every " + interval + " s";
    }
  }

  function render() {
    renderHosts();
    var sample = state.host ? state.latest[state.host] : null;
    renderNow(sample);
    renderModels(sample);
    renderCharts();
    renderStatus();
  }

  function refreshSeries() {
    return loadSeries()
      .then(function () { Object.keys(state.latest).forEach(function (h) {
        // Re-append the latest raw sample after the bucketed history replaced it.
        var sample = state.latest[h];
        delete state.latest[h];
        ingest(sample);
      }); })
      .catch(function (err) { state.error = err.message; })
      .then(render);
  }

  hostSelect.addEventListener("change", function () { state.host = hostSelect.value; render(); });
  windowSelect.addEventListener("change", function () {
    state.windowS = parseInt(windowSelect.value, 10) || 3600;
    refreshSeries();
  });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(renderCharts, 150);
  });

  refreshSeries().then(function () { return pollLatest().catch(function () {}); }).then(render);
  connect();
  window.setInterval(tick, interval * 1000);
  window.setInterval(refreshSeries, SERIES_REFRESH_MS);
})();
