/* The throughput card of the monitoring dashboard: tokens/s per model and time to first token
 * over time, tables by concurrency level and by model, and the most recent requests, from
 * GET /api/monitoring/throughput/ and GET /api/monitoring/requests/.
 *
 * Staff see every user's requests; everyone else only their own (the API decides: this page
 * only says which). It follows the dashboard's window select and refreshes once a minute.
 * Text from the server (model names, emails) is always set with textContent.
 */
(function () {
  "use strict";

  var root = document.getElementById("monitoring");
  var card = document.getElementById("mon-throughput");
  if (!root || !card || !window.MonCharts) return;

  var throughputUrl = root.dataset.throughputUrl;
  var requestsUrl = root.dataset.requestsUrl;
  var staff = root.dataset.staff === "true";
  var REFRESH_MS = 60 * 1000;
  var RECENT = 10;

  var $ = function (id) { return document.getElementById(id); };
  var windowSelect = $("mon-window");
  var state = { data: null, recent: [], error: null, windowS: 3600 };

  function fetchJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (digits !== undefined) return Number(v).toFixed(digits);
    return window.MonCharts.formatNumber(v);
  }

  function seconds(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(2) + " s";
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

  function note(text) {
    var p = document.createElement("p");
    p.className = "mon-note";
    p.textContent = text;
    return p;
  }

  function load() {
    var windowS = parseInt(windowSelect && windowSelect.value, 10) || 3600;
    var until = new Date();
    var since = new Date(until.getTime() - windowS * 1000);
    var range = "since=" + encodeURIComponent(since.toISOString()) +
      "&until=" + encodeURIComponent(until.toISOString());
    state.windowS = windowS;
    return Promise.all([
      fetchJson(throughputUrl + "?" + range),
      fetchJson(requestsUrl + "?" + range + "&page_size=" + RECENT),
    ]).then(function (results) {
      state.data = results[0];
      state.recent = results[1].results;
      state.error = null;
    }).catch(function (err) {
      state.error = err.message;
    }).then(render);
  }

  function renderCharts(data) {
    var tMax = Date.parse(data.until);
    var tMin = Date.parse(data.since);
    var gapMs = 3 * data.resolution * 1000;
    var series = function (field) {
      return data.series.map(function (s) {
        return {
          label: s.model,
          points: s.points.map(function (p) { return { t: Date.parse(p.t), v: p[field] }; }),
        };
      });
    };
    var options = { tMin: tMin, tMax: tMax, gapMs: gapMs, markers: true };
    window.MonCharts.lineChart($("chart-tps"), Object.assign({ series: series("tokens_per_second"), unit: "tok/s" }, options));
    window.MonCharts.lineChart($("chart-ttft"), Object.assign({ series: series("time_to_first_token_seconds"), unit: "s" }, options));
  }

  function statRow(group) {
    var tps = group.tokens_per_second;
    var ttft = group.time_to_first_token_seconds;
    var wait = group.queue_wait_seconds;
    return [
      String(group.requests),
      fmt(tps.avg), fmt(tps.p50), fmt(tps.min) + " – " + fmt(tps.max),
      seconds(ttft.avg), seconds(ttft.p50),
      seconds(wait.avg), seconds(wait.max),
    ];
  }

  var STAT_HEADERS = [
    "Requests", "Tokens/s avg", "Tokens/s p50", "Tokens/s min – max",
    "TTFT avg", "TTFT p50", "Queue wait avg", "Queue wait max",
  ];

  function renderTables(data) {
    var levels = $("mon-tp-levels");
    levels.textContent = "";
    if (data.by_concurrency.length) {
      levels.appendChild(table(
        ["In flight at start"].concat(STAT_HEADERS),
        data.by_concurrency.map(function (level) {
          var name = level.in_flight_at_start === null ? "unknown" : String(level.in_flight_at_start);
          return [name].concat(statRow(level));
        })
      ));
    } else {
      levels.appendChild(note("No completed requests in this window."));
    }

    var models = $("mon-tp-models");
    models.textContent = "";
    if (data.by_model.length) {
      models.appendChild(table(
        ["Model"].concat(STAT_HEADERS, ["Tokens", "Other outcomes"]),
        data.by_model.map(function (m) {
          var others = Object.keys(m.statuses).filter(function (s) { return s !== "complete"; })
            .map(function (s) { return s + " " + m.statuses[s]; }).join(", ");
          return [m.model].concat(statRow(m), [fmt(m.eval_tokens), others || "–"]);
        })
      ));
    }
    data.notes.forEach(function (text) { models.appendChild(note(text)); });
  }

  function renderRecent() {
    var box = $("mon-tp-recent");
    box.textContent = "";
    if (!state.recent.length) {
      box.appendChild(note("No requests in this window."));
      return;
    }
    var headers = ["Started", "Model"];
    if (staff) headers.push("User");
    headers = headers.concat([
      "Status", "Tokens/s", "TTFT", "Queue wait", "In flight", "Tokens", "GPU mem Δ", "RAM Δ",
    ]);
    box.appendChild(table(headers, state.recent.map(function (r) {
      var cells = [new Date(r.created_at).toLocaleString(), r.model];
      if (staff) cells.push(r.user_email);
      return cells.concat([
        r.status + (r.error_code ? " (" + r.error_code + ")" : ""),
        fmt(r.tokens_per_second),
        seconds(r.time_to_first_token_seconds),
        seconds(r.queue_wait_seconds),
        r.in_flight_at_start === null ? "–" : String(r.in_flight_at_start),
        r.eval_count === null ? "–" : String(r.eval_count),
        r.gpu_memory_used_mb_delta === null ? "–" : fmt(r.gpu_memory_used_mb_delta) + " MB",
        r.ram_used_mb_delta === null ? "–" : fmt(r.ram_used_mb_delta) + " MB",
      ]);
    })));
  }

  function render() {
    var status = $("mon-tp-status");
    if (state.error) {
      status.textContent = "Cannot load the request figures (" + state.error + ").";
      return;
    }
    var data = state.data;
    if (!data) return;
    var overall = data.overall;
    status.textContent = overall.requests
      ? overall.requests + " completed requests, " + fmt(overall.eval_tokens) + " tokens; " +
        "tokens/s p50 " + fmt(overall.tokens_per_second.p50) +
        ", time to first token p50 " + seconds(overall.time_to_first_token_seconds.p50) + "."
      : "No completed requests in this window.";
    renderCharts(data);
    renderTables(data);
    renderRecent();
  }

  if (windowSelect) windowSelect.addEventListener("change", load);
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () { if (state.data) renderCharts(state.data); }, 150);
  });
  load();
  window.setInterval(load, REFRESH_MS);
})();
