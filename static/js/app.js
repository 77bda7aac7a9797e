/* Upstream's shared page code: draws Chart.js charts from json_script data, updates them in
   place after HTMX swaps, refreshes live regions only while the tab is visible, and reports
   failed HTMX requests. No eval, no inline script: it runs under script-src 'self'. */
(function () {
  "use strict";

  var REFRESH_SECONDS = 20;
  var root = document.documentElement;

  // ---- Colours: read from the stylesheet so light/dark and the palette live in one place.
  function cssVar(name) {
    return getComputedStyle(root).getPropertyValue(name).trim();
  }
  function colour(key) {
    return cssVar("--" + key) || cssVar("--info");
  }
  function alpha(hex, a) {
    var h = hex.replace("#", "");
    if (h.length === 3) h = h[0] + h[0] + h[1] + h[1] + h[2] + h[2];
    var n = parseInt(h, 16);
    return "rgba(" + ((n >> 16) & 255) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }

  // ---- Units on every number, tooltips and axes alike.
  function compact(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toFixed(1) + " G";
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + " M";
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + " k";
    return String(Math.round(v * 10) / 10);
  }
  var FORMAT = {
    ms: function (v) {
      if (v === null || v === undefined) return "—";
      return v >= 1000 ? +(v / 1000).toFixed(2) + " s" : Math.round(v) + " ms";
    },
    pct: function (v) {
      return v === null || v === undefined ? "—" : +(v * 100).toFixed(1) + " %";
    },
  };
  function formatter(unit) {
    if (FORMAT[unit]) return FORMAT[unit];
    return function (v) {
      return v === null || v === undefined ? "—" : compact(v) + (unit ? " " + unit : "");
    };
  }

  // A line through one value draws nothing: a series with data in a single period (a
  // newcomer's first calls) shows that value as a point instead. Read at draw time, so an
  // update in place that brings a second value turns the point back into a line.
  function lonePoint(ctx) {
    var data = ctx.dataset.data;
    var seen = 0;
    for (var i = 0; i < data.length && seen < 2; i++) {
      if (data[i] !== null && data[i] !== undefined) seen++;
    }
    return seen === 1 ? 3 : 0;
  }

  // ---- Chart configuration from the server's payload (see dashboard/charts.py).
  function datasets(payload) {
    var spark = payload.kind === "spark";
    var out = payload.series.map(function (s, i) {
      var c = colour(s.colour);
      var type = s.type || (payload.kind === "bars" ? "bar" : "line");
      return {
        label: s.label,
        key: s.key,
        data: s.data,
        type: type,
        stack: payload.kind === "bars" ? "total" : undefined,
        backgroundColor: type === "bar" ? c : alpha(c, spark ? 0.18 : 0.12),
        borderColor: c,
        borderWidth: type === "bar" ? 0 : spark ? 1.5 : 2,
        borderDash: s.dash ? [6, 4] : undefined,
        fill: spark || s.fill ? "origin" : false,
        pointRadius: type === "bar" ? 0 : lonePoint,
        pointHoverRadius: spark ? 0 : 3,
        tension: 0.3,
        cubicInterpolationMode: "monotone", // no overshoot below zero or above a peak
        spanGaps: true,
        stepped: s.stepped ? "before" : false,
        order: i + 1,
      };
    });
    if (payload.markers && payload.markers.length) {
      var points = payload.labels.map(function () { return null; });
      var notes = {};
      payload.markers.forEach(function (m) {
        points[m.i] = m.y;
        notes[m.i] = (notes[m.i] ? notes[m.i] + "; " : "") + m.text;
      });
      out.push({
        label: payload.marker_label || "Alerts",
        key: "markers",
        data: points,
        notes: notes,
        type: "line",
        showLine: false,
        pointStyle: "triangle",
        pointRadius: 7,
        pointHoverRadius: 9,
        backgroundColor: colour("text"),
        borderColor: colour("panel"),
        borderWidth: 1,
        order: 0,
      });
    }
    return out;
  }

  function options(payload) {
    var fmt = formatter(payload.unit);
    var spark = payload.kind === "spark";
    var grid = colour("border");
    var text = colour("muted");
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      normalized: true,
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: {
          display: !spark && payload.series.length > 1,
          position: "bottom",
          labels: { color: text, boxWidth: 12, boxHeight: 12, usePointStyle: true },
        },
        tooltip: {
          enabled: !spark,
          callbacks: {
            label: function (ctx) {
              if (ctx.dataset.key === "markers") return ctx.dataset.notes[ctx.dataIndex] || "";
              return ctx.dataset.label + ": " + fmt(ctx.parsed.y);
            },
          },
        },
      },
      scales: {
        x: {
          display: !spark,
          stacked: payload.kind === "bars",
          grid: { display: false },
          ticks: { color: text, maxRotation: 0, autoSkip: true, autoSkipPadding: 16 },
          title: { display: !!payload.x_title, text: payload.x_title || "", color: text },
        },
        y: {
          display: !spark,
          stacked: payload.kind === "bars",
          beginAtZero: true,
          suggestedMax: payload.suggested_max || undefined,
          max: payload.max === undefined ? undefined : payload.max,
          grid: { color: grid },
          border: { display: false },
          ticks: { color: text, maxTicksLimit: 5, callback: function (v) { return fmt(v); } },
          title: { display: !!payload.y_title, text: payload.y_title || "", color: text },
        },
      },
    };
  }

  function build(payload) {
    return {
      type: payload.kind === "bars" ? "bar" : "line",
      data: { labels: payload.labels, datasets: datasets(payload) },
      options: options(payload),
    };
  }

  // Update in place: same Chart, same canvas, new numbers; no animation, so no flicker.
  function update(chart, payload) {
    var fresh = build(payload);
    var old = chart.data.datasets;
    var same =
      old.length === fresh.data.datasets.length &&
      old.every(function (d, i) { return d.key === fresh.data.datasets[i].key; });
    chart.data.labels = fresh.data.labels;
    if (same) {
      old.forEach(function (d, i) {
        var n = fresh.data.datasets[i];
        d.data = n.data;
        d.label = n.label;
        d.notes = n.notes;
        d.backgroundColor = n.backgroundColor;
        d.borderColor = n.borderColor;
      });
    } else {
      chart.data.datasets = fresh.data.datasets;
    }
    chart.options = fresh.options;
    chart.$payload = payload;
    chart.update("none");
  }

  function applyDefaults() {
    if (!window.Chart) return;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = colour("muted");
    Chart.defaults.borderColor = colour("border");
  }

  function drawCharts() {
    if (!window.Chart) return;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.chart);
      if (!source) return;
      var payload = JSON.parse(source.textContent);
      if (source.dataset.seen === "1" && Chart.getChart(canvas)) return;
      source.dataset.seen = "1";
      var chart = Chart.getChart(canvas);
      if (chart) {
        update(chart, payload);
      } else {
        chart = new Chart(canvas, build(payload));
        chart.$payload = payload;
      }
    });
    // Charts whose canvas left the page (a card that went away) let go of their resources.
    Object.values(Chart.instances).forEach(function (chart) {
      if (!chart.canvas.isConnected) chart.destroy();
    });
  }

  function redrawAll() {
    if (!window.Chart) return;
    applyDefaults();
    Object.values(Chart.instances).forEach(function (chart) {
      if (chart.$payload) update(chart, chart.$payload);
    });
  }

  // ---- Live refresh: regions marked data-refresh re-fetch themselves (hx-trigger="refresh").
  // htmx's own "every 20s [cond]" filter needs eval, which the CSP forbids; this does the same.
  var lastRefresh = Date.now();
  function refreshSeconds() {
    var v = parseInt(document.body.dataset.refreshSeconds || "", 10);
    return v > 0 ? v : REFRESH_SECONDS;
  }
  function refreshVisible() {
    if (document.visibilityState !== "visible" || !window.htmx) return;
    lastRefresh = Date.now();
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var active = document.activeElement;
      // Someone is typing or choosing inside it: don't pull the form out from under them.
      if (active && active !== document.body && el.contains(active) && active.matches("input, select, textarea")) return;
      if (el.querySelector("details[open]")) return; // a half-filled silence form, say
      if (el.classList.contains("htmx-request")) return;
      htmx.trigger(el, "refresh");
    });
  }
  function startRefresh() {
    setInterval(refreshVisible, refreshSeconds() * 1000);
    document.addEventListener("visibilitychange", function () {
      // Back on the tab after a while: catch up at once instead of waiting for the next tick.
      if (document.visibilityState === "visible" && Date.now() - lastRefresh >= refreshSeconds() * 1000) {
        refreshVisible();
      }
    });
  }

  // ---- Failed HTMX requests get a word instead of silence.
  var toastTimer = null;
  function toast(message) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }
  function onResponseError(event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 403) toast("Not allowed: your role does not permit this action.");
    else if (xhr.status === 404) toast("That item no longer exists.");
    else toast("Something went wrong (" + xhr.status + "). Try again in a moment.");
  }

  document.addEventListener("DOMContentLoaded", function () {
    applyDefaults();
    drawCharts();
    startRefresh();
    document.body.addEventListener("htmx:afterSettle", drawCharts);
    document.body.addEventListener("htmx:responseError", onResponseError);
    document.body.addEventListener("htmx:sendError", function () {
      toast("Upstream did not answer; the page will try again.");
    });
    var scheme = window.matchMedia("(prefers-color-scheme: dark)");
    if (scheme.addEventListener) scheme.addEventListener("change", redrawAll);
  });

  window.Upstream = { drawCharts: drawCharts, refreshVisible: refreshVisible, toast: toast };
})();
