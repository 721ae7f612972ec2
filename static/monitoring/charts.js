/* Small SVG line charts for the monitoring dashboard: no library, no CDN.
 *
 * MonCharts.lineChart(container, {
 *   series: [{label, points: [{t: <ms>, v: <number|null>}]}],
 *   tMin, tMax,            // ms; the visible window
 *   yMax,                  // optional fixed top (100 for percentages)
 *   gapMs,                 // a longer gap between two points breaks the line
 *   unit,                  // appended to the legend's latest values
 *   markers,               // true: a dot on every point (sparse data such as requests)
 * })
 * Text is always set with textContent: labels (GPU and model names) come from the machine.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HEIGHT = 190;
  var MARGIN = { left: 52, right: 12, top: 10, bottom: 24 };
  // Series colours are the theme's --chart-1 .. --chart-8 (static/css/app.css), applied through
  // the classes mon-series-N / mon-swatch-N (dashboard.css), so that a theme switch recolours
  // the drawn charts without a redraw.
  var COLOR_COUNT = 8;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(range, ticks) {
    var raw = range / Math.max(1, ticks);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= raw) return steps[i] * power;
    }
    return 10 * power;
  }

  function formatNumber(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (Number.isInteger(v) && Math.abs(v) < 100000) return String(v);
    var abs = Math.abs(v);
    if (abs >= 100000) return (v / 1000).toFixed(0) + "k";
    if (abs >= 100) return v.toFixed(0);
    if (abs >= 10) return v.toFixed(1);
    return v.toFixed(abs >= 1 || v === 0 ? 1 : 2);
  }

  function formatTime(ms, spanMs) {
    var d = new Date(ms);
    var hh = String(d.getHours()).padStart(2, "0");
    var mm = String(d.getMinutes()).padStart(2, "0");
    if (spanMs > 36 * 3600 * 1000) {
      return String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0") + " " + hh + ":" + mm;
    }
    if (spanMs <= 10 * 60 * 1000) return hh + ":" + mm + ":" + String(d.getSeconds()).padStart(2, "0");
    return hh + ":" + mm;
  }

  function lastValue(points) {
    for (var i = points.length - 1; i >= 0; i--) {
      if (points[i].v !== null && points[i].v !== undefined && isFinite(points[i].v)) return points[i].v;
    }
    return null;
  }

  function lineChart(container, options) {
    var series = options.series || [];
    var width = Math.max(260, Math.floor(container.clientWidth || 480));
    var tMin = options.tMin, tMax = options.tMax;
    var plotW = width - MARGIN.left - MARGIN.right;
    var plotH = HEIGHT - MARGIN.top - MARGIN.bottom;

    var dataMax = 0, any = false;
    series.forEach(function (s) {
      s.points.forEach(function (p) {
        if (p.v === null || p.v === undefined || !isFinite(p.v) || p.t < tMin || p.t > tMax) return;
        any = true;
        if (p.v > dataMax) dataMax = p.v;
      });
    });
    var yMax = options.yMax || 0;
    if (!yMax) {
      var step0 = niceStep(dataMax > 0 ? dataMax * 1.1 : 1, 4);
      yMax = Math.max(step0, Math.ceil((dataMax * 1.1) / step0) * step0);
    }
    var yStep = niceStep(yMax, 4);

    container.textContent = "";
    var svg = el("svg", {
      viewBox: "0 0 " + width + " " + HEIGHT, width: width, height: HEIGHT,
      class: "mon-svg", role: "img",
    }, container);
    var x = function (t) { return MARGIN.left + ((t - tMin) / Math.max(1, tMax - tMin)) * plotW; };
    var y = function (v) { return MARGIN.top + plotH - (Math.min(v, yMax) / yMax) * plotH; };

    for (var yv = 0; yv <= yMax + 1e-9; yv += yStep) {
      el("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(yv), y2: y(yv), class: "mon-grid" }, svg);
      var label = el("text", { x: MARGIN.left - 6, y: y(yv) + 4, class: "mon-axis", "text-anchor": "end" }, svg);
      label.textContent = formatNumber(yv);
    }
    var span = tMax - tMin;
    for (var i = 0; i <= 4; i++) {
      var t = tMin + (span * i) / 4;
      var tl = el("text", {
        x: x(t), y: HEIGHT - 6, class: "mon-axis",
        "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle",
      }, svg);
      tl.textContent = formatTime(t, span);
    }

    if (!any) {
      var none = el("text", { x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH / 2, class: "mon-nodata", "text-anchor": "middle" }, svg);
      none.textContent = "No data in this window";
    }

    series.forEach(function (s, index) {
      var color = "mon-series-" + (index % COLOR_COUNT);
      var d = "", prevT = null, last = null;
      s.points.forEach(function (p) {
        if (p.t < tMin || p.t > tMax) return;
        if (p.v === null || p.v === undefined || !isFinite(p.v)) { prevT = null; return; }
        var broken = prevT === null || (options.gapMs && p.t - prevT > options.gapMs);
        d += (broken ? "M" : "L") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1) + " ";
        prevT = p.t;
        last = p;
        if (options.markers) el("circle", { cx: x(p.t), cy: y(p.v), r: 2.5, class: "mon-marker " + color }, svg);
      });
      if (d) el("path", { d: d, class: "mon-line " + color }, svg);
      if (last) el("circle", { cx: x(last.t), cy: y(last.v), r: 2.5, class: "mon-last " + color }, svg);
    });

    var legend = document.createElement("ul");
    legend.className = "mon-legend";
    series.forEach(function (s, index) {
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "mon-swatch mon-swatch-" + (index % COLOR_COUNT);
      item.appendChild(swatch);
      var value = lastValue(s.points);
      item.appendChild(document.createTextNode(
        s.label + (value === null ? "" : ": " + formatNumber(value) + (options.unit ? " " + options.unit : ""))
      ));
      legend.appendChild(item);
    });
    container.appendChild(legend);
  }

  window.MonCharts = { lineChart: lineChart, formatNumber: formatNumber };
})();
