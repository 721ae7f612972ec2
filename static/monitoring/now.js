/* "On the GPU now": per Ollama host, the generations running and the queue, with a Cancel
 * button for staff. One panel for the monitoring page and the admin's staff page
 * (templates/monitoring/_now_panel.html).
 *
 * Live: the /ws/monitoring/ socket, asked for {"type": "now.subscribe"}, pushes
 * {"type": "monitoring.now", "now": {...}} (the shape of GET /api/monitoring/now/) at once and
 * whenever it changes; the web process serving the socket reads the gate itself, so this works
 * on the embedded defaults too. While the socket is down the panel polls the endpoint. The
 * seconds are counted here from each entry's `since` (against the server's clock, `at`), so an
 * idle queue costs no frames.
 *
 * Rows are keyed by conversation and updated in place: a frame never takes a focused Cancel
 * button away. Everything from the server is set with textContent.
 */
(function () {
  "use strict";

  var panel = document.getElementById("now-panel");
  if (!panel) return;

  var nowUrl = panel.dataset.nowUrl;
  var cancelUrl = panel.dataset.cancelUrl;
  var wsPath = panel.dataset.wsPath;
  var staff = panel.dataset.staff === "true";
  var me = parseInt(panel.dataset.me, 10);
  var POLL_MS = 3000;
  var RECONNECT_MS = [1000, 2000, 5000, 10000];
  var CLOSE_UNAUTHENTICATED = 4401;

  var hostsBox = document.getElementById("now-hosts");
  var statusEl = document.getElementById("now-status");
  var messageEl = document.getElementById("now-message");

  var state = {
    view: null,
    skewMs: 0, // local clock minus the server's
    socket: null,
    live: false,
    attempts: 0,
    authLost: false,
    error: null,
  };

  // ---- data in

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function request(method, url, body) {
    var headers = { Accept: "application/json" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken();
    }
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) state.authLost = true;
        if (!response.ok) {
          var error = new Error(data.detail || "HTTP " + response.status);
          error.code = data.code;
          throw error;
        }
        return data;
      });
    });
  }

  function accept(view) {
    state.view = view;
    state.skewMs = Date.now() - Date.parse(view.at);
    state.error = null;
    render();
  }

  function poll() {
    if (state.live || state.authLost) return;
    request("GET", nowUrl).then(accept, function (err) {
      state.error = err.message;
      renderStatus();
    });
  }

  function connect() {
    if (!("WebSocket" in window) || state.authLost) return;
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket;
    try {
      socket = new WebSocket(proto + "//" + window.location.host + wsPath);
    } catch (err) {
      reconnectLater();
      return;
    }
    state.socket = socket;
    socket.onopen = function () {
      socket.send(JSON.stringify({ type: "now.subscribe" }));
    };
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      if (frame.type !== "monitoring.now") return;
      state.live = true;
      state.attempts = 0;
      accept(frame.now);
    };
    socket.onclose = function (event) {
      state.socket = null;
      state.live = false;
      if (event.code === CLOSE_UNAUTHENTICATED) state.authLost = true;
      else reconnectLater();
      renderStatus();
    };
  }

  function reconnectLater() {
    var delay = RECONNECT_MS[Math.min(state.attempts, RECONNECT_MS.length - 1)];
    state.attempts += 1;
    window.setTimeout(connect, delay);
  }

  // ---- staff's cancel

  function cancel(entry, button) {
    var who = entry.user_email || "this user";
    if (!window.confirm("Stop " + who + "'s generation (" + (entry.model || "?") + ")? Its reply is kept, marked as stopped by staff.")) return;
    button.disabled = true;
    button.textContent = "Stopping…";
    request("POST", cancelUrl, { conversation: entry.conversation }).then(function () {
      say("Stopped " + who + "'s generation.", false);
      if (!state.live) poll();
    }, function (err) {
      button.disabled = false;
      button.textContent = "Cancel";
      say("Could not stop it: " + err.message, true);
    });
  }

  function say(text, isError) {
    messageEl.hidden = false;
    messageEl.textContent = text;
    messageEl.classList.toggle("now-error", isError);
  }

  // ---- rendering

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h ? h + ":" + two(m) : m) + ":" + two(s);
  }

  function elapsed(since) {
    return (Date.now() - state.skewMs - Date.parse(since)) / 1000;
  }

  function userLabel(entry) {
    if (entry.user === me) return "You" + (staff && entry.user_email ? " (" + entry.user_email + ")" : "");
    return entry.user_email || "user " + entry.user;
  }

  function keyOf(entry) { return entry.conversation || entry.since + "|" + entry.user; }

  // One row per entry, kept across frames (its Cancel button, and focus on it, survive).
  function syncRows(list, entries, build, update) {
    var existing = {};
    Array.prototype.forEach.call(list.children, function (li) { existing[li.dataset.key] = li; });
    entries.forEach(function (entry, index) {
      var key = keyOf(entry);
      var li = existing[key];
      if (!li) {
        li = build(entry);
        li.dataset.key = key;
      }
      delete existing[key];
      update(li, entry);
      if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
    });
    Object.keys(existing).forEach(function (key) { existing[key].remove(); });
  }

  function buildRow(entry, queued) {
    var li = el("li", "now-row");
    var who = el("div", "now-who");
    if (queued) who.appendChild(el("span", "now-position"));
    who.appendChild(el("span", "now-user"));
    who.appendChild(el("span", "now-model"));
    li.appendChild(who);
    li.appendChild(el("div", "now-figures"));
    if (staff && entry.conversation) {
      var button = el("button", "now-cancel", "Cancel");
      button.type = "button";
      button.addEventListener("click", function () { cancel(li._entry, button); });
      li.appendChild(button);
    }
    return li;
  }

  function figures(box, parts) {
    box.textContent = "";
    parts.forEach(function (part) { box.appendChild(el("span", null, part)); });
  }

  function updateRunning(li, entry) {
    li._entry = entry;
    li.querySelector(".now-user").textContent = userLabel(entry);
    li.querySelector(".now-model").textContent = entry.model;
    figures(li.querySelector(".now-figures"), [
      "for " + duration(elapsed(entry.since)),
      entry.tokens + " tokens",
      entry.tokens_per_second === null ? "– tokens/s" : entry.tokens_per_second.toFixed(1) + " tokens/s",
    ]);
    var button = li.querySelector(".now-cancel");
    if (button) button.setAttribute("aria-label", "Cancel the generation of " + userLabel(entry));
  }

  function updateQueued(li, entry) {
    li._entry = entry;
    li.querySelector(".now-position").textContent = "#" + entry.position;
    li.querySelector(".now-user").textContent = userLabel(entry);
    li.querySelector(".now-model").textContent = entry.model;
    var parts = ["waiting " + duration(elapsed(entry.since))];
    if (entry.estimated_wait_seconds !== null && entry.estimated_wait_seconds !== undefined) {
      parts.push("about " + duration(entry.estimated_wait_seconds) + " to go");
    }
    figures(li.querySelector(".now-figures"), parts);
    var button = li.querySelector(".now-cancel");
    if (button) button.setAttribute("aria-label", "Cancel the queued request of " + userLabel(entry));
  }

  function hostSection(host) {
    var id = "now-host-" + encodeURIComponent(host.host).replace(/[^A-Za-z0-9_-]/g, "_");
    var section = document.getElementById(id);
    if (section) return section;
    section = el("section", "now-host");
    section.id = id;
    section.appendChild(el("h3"));
    section.appendChild(el("h4", null, "Running"));
    section.appendChild(el("ul", "now-list now-running"));
    section.appendChild(el("p", "now-empty now-running-empty", "Nothing is being generated."));
    section.appendChild(el("h4", null, "Queue"));
    section.appendChild(el("ol", "now-list now-queue"));
    section.appendChild(el("p", "now-empty now-queue-empty", "Nobody is waiting."));
    section.appendChild(el("p", "now-others"));
    return section;
  }

  function render() {
    var view = state.view;
    if (view) {
      var seen = {};
      view.hosts.forEach(function (host, index) {
        var section = hostSection(host);
        seen[section.id] = true;
        if (hostsBox.children[index] !== section) hostsBox.insertBefore(section, hostsBox.children[index] || null);
        section.querySelector("h3").textContent = host.host + " · " + host.running.length + " of " + host.max_concurrency + " slots in use";
        syncRows(section.querySelector(".now-running"), host.running,
          function (entry) { return buildRow(entry, false); }, updateRunning);
        syncRows(section.querySelector(".now-queue"), host.queue,
          function (entry) { return buildRow(entry, true); }, updateQueued);
        section.querySelector(".now-running-empty").hidden = host.running.length > 0 || host.others_running > 0;
        section.querySelector(".now-queue-empty").hidden = host.queue.length > 0 || host.others_queued > 0;
        var others = section.querySelector(".now-others");
        others.hidden = !(host.others_running || host.others_queued);
        others.textContent = "Other users: " + host.others_running + " running, " + host.others_queued + " waiting.";
      });
      Array.prototype.slice.call(hostsBox.children).forEach(function (section) {
        if (!seen[section.id]) section.remove();
      });
    }
    renderStatus();
  }

  function renderStatus() {
    if (state.authLost) statusEl.textContent = "Not logged in: reload the page to log in again.";
    else if (state.error) statusEl.textContent = "Cannot reach the server (" + state.error + "); retrying.";
    else if (state.live) statusEl.textContent = "Live";
    else if (state.view) statusEl.textContent = "Updated every " + POLL_MS / 1000 + " s";
    else statusEl.textContent = "Loading…";
  }

  // The clocks of the rows tick here, between frames.
  function tick() {
    Array.prototype.forEach.call(hostsBox.querySelectorAll(".now-running > li"), function (li) {
      if (li._entry) updateRunning(li, li._entry);
    });
    Array.prototype.forEach.call(hostsBox.querySelectorAll(".now-queue > li"), function (li) {
      if (li._entry) updateQueued(li, li._entry);
    });
  }

  poll();
  connect();
  window.setInterval(poll, POLL_MS);
  window.setInterval(tick, 1000);
})();
