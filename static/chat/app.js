// The web chat: conversations (REST), the model picker, per-conversation settings, and the
// replies streamed over /ws/chat/ (docs/api.md). Model text goes through ChatMarkdown, which
// builds DOM nodes and never parses it as HTML; everything else from the server is set as
// text too.
(function () {
  "use strict";

  const configNode = document.getElementById("chat-config");
  if (!configNode) return;
  const config = JSON.parse(configNode.textContent);
  const urls = config.urls;
  const OPTION_NAMES = ["temperature", "max_tokens", "num_ctx", "top_p"];
  const MODEL_KEY = "chat.model";

  const $ = (id) => document.getElementById(id);
  const dom = {
    app: $("chat-app"),
    sidebar: $("sidebar"),
    backdrop: $("backdrop"),
    openSidebar: $("open-sidebar"),
    closeSidebar: $("close-sidebar"),
    newChat: $("new-chat"),
    search: $("search"),
    convList: $("conversations"),
    convEmpty: $("conv-empty"),
    convError: $("conv-error"),
    convMore: $("conv-more"),
    title: $("chat-title"),
    model: $("model"),
    modelDot: $("model-dot"),
    modelsRefresh: $("models-refresh"),
    modelsNote: $("models-note"),
    settingsToggle: $("settings-toggle"),
    settings: $("settings"),
    systemPrompt: $("system-prompt"),
    settingsStatus: $("settings-status"),
    conn: $("conn"),
    banner: $("banner"),
    messages: $("messages"),
    emptyChat: $("empty-chat"),
    status: $("chat-status"),
    usage: $("usage-note"),
    composer: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    stop: $("stop"),
    chatMain: document.querySelector(".chat-main"),
    attachTray: $("attach-tray"),
    attachList: $("attach-list"),
    attachHint: $("attach-hint"),
    attach: $("attach"),
    fileInput: $("file-input"),
    recentFiles: $("recent-files"),
    recentMenu: $("recent-menu"),
    dropOverlay: $("drop-overlay"),
    announce: $("announce"),
  };

  const state = {
    conversations: [],
    nextPage: null,
    current: null, // the open conversation (as the API returns it), null for a new chat
    draft: { model: localStorage.getItem(MODEL_KEY) || "", system: "", options: {} },
    models: [],
    gen: null, // the reply being generated in the open conversation
    waitTimer: null,
    expired: false,
    switching: false, // a move to another version is on its way
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const ICONS = {
    rename: ["M4 20h4L19 9l-4-4L4 16v4z", "M13 7l4 4"],
    delete: ["M4 7h16", "M9 7V4h6v3", "M6 7l1 13h10l1-13", "M10 11v6", "M14 11v6"],
    copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
    check: ["M5 12l5 5L20 7"],
    regenerate: [
      "M20 11a8 8 0 0 0-14.9-3.9",
      "M4 4v4h4",
      "M4 13a8 8 0 0 0 14.9 3.9",
      "M20 20v-4h-4",
    ],
    continue: ["M5 5l7 7-7 7", "M13 5l7 7-7 7"],
    chevron: ["M6 9l6 6 6-6"],
    prev: ["M15 18l-6-6 6-6"],
    next: ["M9 18l6-6-6-6"],
  };

  function icon(name) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "16");
    svg.setAttribute("height", "16");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("fill", "none");
    svg.setAttribute("stroke", "currentColor");
    svg.setAttribute("stroke-width", "2");
    svg.setAttribute("stroke-linecap", "round");
    svg.setAttribute("stroke-linejoin", "round");
    for (const d of ICONS[name]) {
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }

  function cpLength(text) {
    return Array.from(text).length; // offsets in chat.token frames count code points
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  class ApiError extends Error {
    constructor(status, data, message) {
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  async function api(url, options) {
    const method = (options && options.method) || "GET";
    const body = options && options.body;
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (e) {
      throw new ApiError(0, null, "The server could not be reached.");
    }
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
    }
    if (response.status === 401) {
      sessionExpired();
      throw new ApiError(401, data, "Your session expired.");
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : "";
      throw new ApiError(response.status, data, detail || `The server answered ${response.status}.`);
    }
    return data;
  }

  function conversationUrl(id) {
    return `${urls.conversations}${encodeURIComponent(id)}/`;
  }

  function formatNumber(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : null;
  }

  // A queue's estimated wait: "12 s", "3 min".
  function formatWait(seconds) {
    if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
    return `${Math.round(seconds / 60)} min`;
  }

  function formatSize(bytes) {
    if (typeof bytes !== "number") return "";
    const gb = bytes / 1e9;
    return `${gb.toFixed(gb < 1 ? 2 : 1)} GB`;
  }

  // `frame`: the error answered, whose code and detail go behind "Details" (errors.js).
  function showBanner(text, kind, link, frame) {
    dom.banner.replaceChildren();
    dom.banner.className = `banner ${kind || "error"}`;
    if (frame) window.ChatErrors.fill(dom.banner, text, frame);
    else dom.banner.append(document.createTextNode(text));
    if (link) {
      const a = el("a", "", link.text);
      a.href = link.href;
      dom.banner.append(" ", a);
    }
    dom.banner.hidden = false;
  }

  function hideBanner() {
    if (state.expired) return;
    dom.banner.hidden = true;
    dom.banner.replaceChildren();
  }

  function setStatus(text) {
    dom.status.textContent = text || "";
    dom.status.hidden = !text;
  }

  // ------------------------------------------------------------------ daily token budget

  // Said from this share of the day's budget on (GET /api/auth/me/ `usage`).
  const USAGE_WARN_FRACTION = 0.8;

  function formatCount(value) {
    return Number(value).toLocaleString("en-US");
  }

  // "00:00": when the budget resets, on the reader's own clock.
  function formatClock(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "midnight";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  function budgetExhaustedText(frame) {
    const budget = typeof frame.budget === "number" ? ` of ${formatCount(frame.budget)} tokens` : "";
    const when = frame.resets_at ? ` at ${formatClock(frame.resets_at)}` : "";
    return `You have used today's budget${budget}. It resets${when}: you can chat again then.`;
  }

  // `usage`: {tokens, budget, resets_at, fraction}; a note only from 80 % of a budget on.
  // data-state says what was last shown: "unlimited", "below", "warn" or "exhausted".
  function showUsage(usage) {
    if (!usage || usage.fraction == null || usage.fraction < USAGE_WARN_FRACTION) {
      dom.usage.hidden = true;
      dom.usage.textContent = "";
      dom.usage.classList.remove("exhausted");
      dom.usage.dataset.state = usage && usage.fraction != null ? "below" : "unlimited";
      return;
    }
    const percent = Math.min(100, Math.floor(usage.fraction * 100));
    const exhausted = usage.tokens >= usage.budget;
    dom.usage.dataset.state = exhausted ? "exhausted" : "warn";
    dom.usage.textContent = exhausted
      ? `You have used all of today's ${formatCount(usage.budget)} tokens; the budget resets at ${formatClock(usage.resets_at)}.`
      : `You have used ${percent} % of today's ${formatCount(usage.budget)} tokens; resets at ${formatClock(usage.resets_at)}.`;
    dom.usage.classList.toggle("exhausted", exhausted);
    dom.usage.hidden = false;
  }

  async function loadUsage() {
    try {
      showUsage(await api(urls.usage));
    } catch (e) {
      // Only a notice: the chat works without it.
    }
  }

  // ------------------------------------------------------------------ error texts

  // The sentences live in errors.js (every code of docs/api.md); the technical part goes
  // behind "Details" where the text is shown (showBanner, a reply's note).
  // `kind`: what the frame answered ("send", "regenerate", "edit", "continue"), when known.
  function errorText(frame, kind) {
    return window.ChatErrors.text(frame, kind, {
      budgetText: budgetExhaustedText,
      maxAttachments: config.uploads.maxAttachments,
    });
  }

  // ------------------------------------------------------------------ session and connection

  function loginUrl() {
    const next = `${window.location.pathname}${window.location.search}`;
    return `${urls.login}?next=${encodeURIComponent(next)}`;
  }

  function sessionExpired() {
    if (state.expired) return;
    state.expired = true;
    showBanner("Your session expired, log in again.", "error", {
      href: loginUrl(),
      text: "Log in",
    });
    dom.banner.classList.add("expired");
    dom.prompt.disabled = true;
    dom.send.disabled = true;
    dom.stop.disabled = true;
    if (tray) tray.setDisabled(true);
    setConnection("expired");
  }

  const CONNECTION_TEXT = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    expired: "Signed out",
  };

  // The indicator tells about the connection to this server; when the server answers but
  // Ollama does not (the models list says so), it says that too, so that it never reads
  // "Connected" beside a note that nothing can answer: "Connected · Ollama down".
  function setConnection(name) {
    dom.conn.dataset.state = name;
    const ollamaDown = name === "connected" && state.ollamaDown;
    if (ollamaDown) dom.conn.dataset.ollama = "down";
    else delete dom.conn.dataset.ollama;
    dom.conn.querySelector(".conn-text").textContent = ollamaDown
      ? "Connected · Ollama down"
      : CONNECTION_TEXT[name] || name;
    dom.conn.title = ollamaDown
      ? "Connected to the server, but Ollama is not answering: replies cannot be generated"
      : name === "connected"
        ? "Live connection to the server"
        : name === "expired"
          ? "Your session expired"
          : "Trying to reach the server; replies resume where they stopped";
    updateComposer();
  }

  const OLLAMA_DOWN_CODES = new Set(["ollama_unreachable", "ollama_timeout", "ollama_error"]);

  function setOllamaDown(down) {
    if (Boolean(state.ollamaDown) === down) return;
    state.ollamaDown = down;
    setConnection(dom.conn.dataset.state);
  }

  let tray = null; // the files attached to the next message (attachments.js), made below

  const socket = new window.ChatSocket(urls.websocket, {
    onFrame: handleFrame,
    onOpen: resumeAfterReconnect,
    onState: (name) => {
      if (name === "expired") sessionExpired();
      else setConnection(name);
    },
  });

  // ------------------------------------------------------------------ message views

  function formatTokens(value) {
    if (value < 1000) return String(value);
    const k = value / 1000;
    return `${k < 10 ? k.toFixed(1).replace(/\.0$/, "") : Math.round(k)}k`;
  }

  // What the model was sent (metrics.context, when the server reports it).
  function contextReport(metrics) {
    const context = metrics && metrics.context;
    if (!context || typeof context !== "object") return null;
    const used = Number(context.tokens_estimated);
    const window = Number(context.window);
    return {
      used: Number.isFinite(used) && used >= 0 ? used : null,
      window: Number.isFinite(window) && window > 0 ? window : null,
      sent: Number.isFinite(context.messages_sent) ? context.messages_sent : null,
      dropped: Number.isFinite(context.messages_dropped) ? context.messages_dropped : 0,
      approx: context.counted !== "reported" ? "~" : "",
      overBudget: context.over_budget === true,
    };
  }

  function contextSummary(report) {
    const parts = [];
    if (report.used != null && report.window != null) {
      const percent = Math.round((report.used / report.window) * 100);
      parts.push(`${report.approx}${report.used} of ${report.window} tokens (${percent}%)`);
    }
    if (report.sent != null) {
      parts.push(`${report.sent} message${report.sent === 1 ? "" : "s"} sent`);
    }
    if (report.dropped > 0) parts.push(`${report.dropped} left out`);
    return parts.join(" · ");
  }

  function contextGauge(report) {
    if (!report || report.used == null || report.window == null) return null;
    const gauge = el("span", "ctx-gauge");
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = report.window;
    meter.value = Math.min(report.used, report.window);
    meter.low = report.window * 0.7;
    meter.high = report.window * 0.9;
    meter.optimum = 0;
    const summary = contextSummary(report);
    meter.setAttribute("aria-label", `Context window used: ${summary}`);
    gauge.title = `Context window used: ${summary}`;
    const text = el(
      "span",
      "ctx-text",
      `${report.approx}${formatTokens(report.used)}/${formatTokens(report.window)}`
    );
    text.setAttribute("aria-hidden", "true");
    gauge.append(meter, text);
    return gauge;
  }

  function droppedText(report) {
    if (!report || !(report.dropped > 0)) return "";
    return report.dropped === 1
      ? "The oldest message no longer fits the model's context."
      : `The ${report.dropped} oldest messages no longer fit the model's context.`;
  }

  function figuresList(metrics) {
    const report = contextReport(metrics);
    const rows = [
      ["Tokens/s", formatNumber(metrics.tokens_per_second, 1)],
      [
        "Time to first token",
        formatNumber(metrics.time_to_first_token_seconds, 2) &&
          `${formatNumber(metrics.time_to_first_token_seconds, 2)} s`,
      ],
      [
        "Tokens",
        metrics.eval_count != null || metrics.prompt_eval_count != null
          ? `${metrics.eval_count ?? "?"} generated · ${metrics.prompt_eval_count ?? "?"} prompt · ${metrics.total_tokens ?? "?"} total`
          : null,
      ],
      ["Context", report ? contextSummary(report) || null : null],
      [
        "Queue wait",
        formatNumber(metrics.queue_wait_seconds, 2) &&
          `${formatNumber(metrics.queue_wait_seconds, 2)} s`,
      ],
      [
        "Total time",
        formatNumber(metrics.total_duration_seconds, 2) &&
          `${formatNumber(metrics.total_duration_seconds, 2)} s`,
      ],
      [
        "Prompt tokens/s",
        formatNumber(metrics.prompt_tokens_per_second, 1),
      ],
      ["Model", metrics.model || null],
      ["Stop reason", metrics.done_reason || null],
    ].filter((row) => row[1]);
    if (!rows.length) return null;
    const dl = el("dl", "figures");
    for (const [name, value] of rows) {
      dl.append(el("dt", "", name), el("dd", "", value));
    }
    return dl;
  }

  function hasFigures(metrics) {
    return (
      metrics &&
      (metrics.tokens_per_second != null ||
        metrics.time_to_first_token_seconds != null ||
        metrics.eval_count != null)
    );
  }

  // "14:05" today, "12 Mar, 14:05" before.
  function formatWhen(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    const time = { hour: "2-digit", minute: "2-digit" };
    const today = new Date().toDateString() === date.toDateString();
    return {
      short: today
        ? date.toLocaleTimeString([], time)
        : date.toLocaleString([], { day: "numeric", month: "short", ...time }),
      long: date.toLocaleString(),
    };
  }

  // A polite announcement for screen readers (copy feedback and the like).
  function announce(text) {
    dom.announce.textContent = "";
    requestAnimationFrame(() => {
      dom.announce.textContent = text;
    });
  }

  // ------------------------------------------------------------------ message actions

  // Actions that start a generation or change the branch: off while a reply is generated.
  const LOCKING = new Set([
    "regenerate",
    "regenerate-menu",
    "continue",
    "edit",
    "edit-save",
    "prev",
    "next",
  ]);

  function actionsLocked() {
    return state.gen !== null || state.expired || state.switching || !state.current;
  }

  function updateActions() {
    const locked = actionsLocked();
    for (const button of dom.messages.querySelectorAll("button[data-action]")) {
      if (!LOCKING.has(button.dataset.action)) continue;
      button.disabled = locked || button.dataset.edge === "true";
    }
    if (locked) closeMenu(false);
  }

  function actionButton(action, iconName, label, text) {
    const button = el("button", `btn icon small msg-action${text ? " labelled" : ""}`);
    button.type = "button";
    button.dataset.action = action;
    button.setAttribute("aria-label", label);
    button.title = label;
    if (iconName) button.append(icon(iconName));
    if (text) button.append(el("span", "", text));
    if (LOCKING.has(action)) button.disabled = actionsLocked();
    return button;
  }

  // ‹ 2/3 ›: the versions at this message's place (moving shows that version's branch).
  function pager(view) {
    const data = view.data;
    const siblings = Array.isArray(data.siblings) ? data.siblings : [];
    if (siblings.length < 2) return null;
    const index = Math.max(0, siblings.indexOf(data.id));
    const what = view.role === "user" ? "message" : "reply";
    const group = el("div", "pager");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", `Versions of this ${what}`);
    const prev = actionButton("prev", "prev", `Previous version of this ${what}`);
    const next = actionButton("next", "next", `Next version of this ${what}`);
    const count = el("span", "pager-count", `${index + 1}/${siblings.length}`);
    count.setAttribute("aria-label", `Version ${index + 1} of ${siblings.length}`);
    if (index === 0) prev.dataset.edge = "true";
    if (index === siblings.length - 1) next.dataset.edge = "true";
    prev.disabled = prev.disabled || index === 0;
    next.disabled = next.disabled || index === siblings.length - 1;
    prev.addEventListener("click", () => showVersion(view, siblings[index - 1], "prev"));
    next.addEventListener("click", () => showVersion(view, siblings[index + 1], "next"));
    group.append(prev, count, next);
    return group;
  }

  function continuable(view) {
    const data = view.data;
    if (!data || data.id == null) return false;
    if (view.metrics && view.metrics.done_reason === "length") return true;
    return ["cancelled", "failed", "interrupted"].includes(data.status) && view.text !== "";
  }

  function actionsKey(view) {
    const data = view.data;
    if (!data || data.id == null) return "";
    const resumable = view.role === "assistant" && continuable(view);
    return JSON.stringify([data.id, data.siblings, data.model, resumable]);
  }

  function renderActions(view) {
    const key = actionsKey(view);
    if (key === view.actionsKey) return;
    view.actionsKey = key;
    if (menuState && menuState.view === view) closeMenu(false);
    const buttons = [];
    if (key) {
      const versions = pager(view);
      if (versions) buttons.push(versions);
      if (view.role === "user") {
        const edit = actionButton("edit", "rename", "Edit this message");
        edit.addEventListener("click", () => startEdit(view));
        buttons.push(edit);
      } else {
        const copy = actionButton("copy", "copy", "Copy the reply as Markdown");
        copy.addEventListener("click", () => copyReply(view, copy));
        const model = view.data.model;
        const regenerate = actionButton(
          "regenerate",
          "regenerate",
          model ? `Regenerate this reply with ${model}` : "Regenerate this reply"
        );
        regenerate.addEventListener("click", () => regenerateReply(view, model || null));
        const more = actionButton("regenerate-menu", "chevron", "Regenerate with another model");
        more.classList.add("menu-toggle-btn");
        more.setAttribute("aria-haspopup", "menu");
        more.setAttribute("aria-expanded", "false");
        more.addEventListener("click", () => toggleModelMenu(view, more));
        const split = el("span", "split-action");
        split.append(regenerate, more);
        buttons.push(copy, split);
        if (continuable(view)) {
          const resume = actionButton("continue", "continue", "Continue this reply", "Continue");
          resume.addEventListener("click", () => continueReply(view));
          buttons.push(resume);
        }
      }
    }
    view.actions.replaceChildren(...buttons);
  }

  const viewOf = new WeakMap(); // a message's node -> its view

  function messageViews() {
    return [...dom.messages.children].map((node) => viewOf.get(node)).filter(Boolean);
  }

  function createUserView(text, attachments, data) {
    const root = el("article", "msg msg-user");
    const chips = window.ChatAttachments.messageChips(attachments, urls.uploads);
    if (chips) root.append(chips);
    const body = el("div", "msg-body", text);
    const actions = el("div", "msg-actions");
    root.append(body, actions);
    const view = {
      role: "user",
      root,
      body,
      actions,
      text,
      attachments: attachments || [],
      data: null,
      editor: null,
      setData(next) {
        view.data = next ? { ...next } : null;
        if (view.data && view.data.id != null) root.dataset.message = String(view.data.id);
        renderActions(view);
      },
    };
    viewOf.set(root, view);
    view.setData(data || null);
    return view;
  }

  function createAssistantView(data) {
    const root = el("article", "msg msg-assistant");
    const byline = el("div", "msg-byline");
    const body = el("div", "msg-body markdown");
    const note = el("div", "msg-note");
    note.hidden = true;
    const contextLine = el("p", "msg-context");
    contextLine.hidden = true;
    const foot = el("div", "msg-foot");
    const actions = el("div", "msg-actions");
    const meta = el("div", "msg-meta");
    foot.append(actions, meta);
    const details = el("div", "msg-details");
    root.append(byline, body, note, contextLine, foot, details);
    const renderer = window.ChatMarkdown.createRenderer();
    const view = {
      role: "assistant",
      root,
      body,
      foot,
      actions,
      text: "",
      data: null,
      metrics: null,
      error: null,
      render(text) {
        view.text = text;
        body.replaceChildren(renderer.render(text));
      },
      setNote(text, kind, frame) {
        if (frame) window.ChatErrors.fill(note, text, frame);
        else note.textContent = text || "";
        note.className = `msg-note ${kind || ""}`;
        note.hidden = !text;
      },
      setMessage(id) {
        if (id != null) root.dataset.message = String(id);
      },
      setData(next) {
        view.data = next ? { ...next } : null;
        if (!view.data) return;
        view.setMessage(view.data.id);
        const when = view.data.created_at ? formatWhen(view.data.created_at) : null;
        const parts = [];
        if (view.data.model) parts.push(el("span", "msg-model", view.data.model));
        if (when) {
          const time = el("time", "msg-time", when.short);
          time.dateTime = view.data.created_at;
          time.title = when.long;
          parts.push(time);
        }
        byline.replaceChildren(...parts);
        renderActions(view);
      },
      // Clears the figures and marks of a reply that goes on (a continue).
      reopen() {
        meta.replaceChildren();
        details.replaceChildren();
        contextLine.hidden = true;
        root.dataset.status = "streaming";
        delete root.dataset.code;
        if (view.data) view.data.status = "streaming";
      },
      finish(status, metrics, error) {
        root.classList.remove("streaming", "waiting");
        root.dataset.status = status;
        view.metrics = metrics || null;
        view.error = error || null;
        if (view.data) view.data.status = status;
        meta.replaceChildren();
        details.replaceChildren();
        if (status === "cancelled") meta.append(el("span", "badge", "Stopped"));
        if (status === "interrupted") meta.append(el("span", "badge warn", "Interrupted"));
        if (status === "failed") meta.append(el("span", "badge bad", "Failed"));
        if (error) view.setNote(error, "error", view.errorFrame);
        else view.setNote("");
        if (hasFigures(metrics)) {
          const toggle = el("button", "details-toggle", "Details");
          toggle.type = "button";
          toggle.setAttribute("aria-expanded", "false");
          const figures = figuresList(metrics);
          figures.hidden = true;
          toggle.addEventListener("click", () => {
            figures.hidden = !figures.hidden;
            toggle.setAttribute("aria-expanded", String(!figures.hidden));
            if (!figures.hidden) figures.scrollIntoView({ block: "nearest" });
          });
          const summary = el(
            "span",
            "figures-summary",
            [
              formatNumber(metrics.tokens_per_second, 1) &&
                `${formatNumber(metrics.tokens_per_second, 1)} tok/s`,
              metrics.eval_count != null ? `${metrics.eval_count} tokens` : null,
            ]
              .filter(Boolean)
              .join(" · ")
          );
          meta.append(toggle, summary);
          details.append(figures);
        }
        const report = contextReport(metrics);
        const gauge = contextGauge(report);
        if (gauge) meta.append(gauge);
        const dropped = droppedText(report);
        const over = report && report.overBudget
          ? "The question alone is longer than the model's context window; it was sent whole."
          : "";
        contextLine.textContent = [dropped, over].filter(Boolean).join(" ");
        contextLine.hidden = !contextLine.textContent;
        renderActions(view);
      },
    };
    viewOf.set(root, view);
    if (data) view.setData(data);
    return view;
  }

  function appendView(view) {
    dom.emptyChat.hidden = true;
    dom.messages.append(view.root);
  }

  function nearBottom() {
    const m = dom.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
  }

  function scrollToBottom(force) {
    if (force || state.stickToBottom) dom.messages.scrollTop = dom.messages.scrollHeight;
  }

  dom.messages.addEventListener("scroll", () => {
    state.stickToBottom = nearBottom();
  });

  // ------------------------------------------------------------------ copy

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      const area = el("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "copy-buffer";
      document.body.append(area);
      area.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (e2) {
        ok = false;
      }
      area.remove();
      return ok;
    }
  }

  // Copy buttons of code blocks (delegated: the code blocks are re-rendered while streaming).
  dom.messages.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-btn");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("pre code");
    const ok = await copyText(code ? code.textContent : "");
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });

  async function copyReply(view, button) {
    const ok = await copyText(view.text);
    const label = ok ? "Copied" : "Copy failed";
    clearTimeout(button.resetTimer);
    button.dataset.copied = String(ok);
    button.setAttribute("aria-label", label);
    button.title = label;
    button.replaceChildren(icon(ok ? "check" : "copy"));
    announce(ok ? "The reply was copied to the clipboard." : "The reply could not be copied.");
    button.resetTimer = setTimeout(() => {
      delete button.dataset.copied;
      button.setAttribute("aria-label", "Copy the reply as Markdown");
      button.title = "Copy the reply as Markdown";
      button.replaceChildren(icon("copy"));
    }, 2000);
  }

  // ------------------------------------------------------------------ the model menu of Regenerate

  let menuState = null; // the open menu: {menu, button, view}

  function closeMenu(refocus) {
    if (!menuState) return;
    const { menu, button } = menuState;
    menuState = null;
    menu.remove();
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  }

  function toggleModelMenu(view, button) {
    if (menuState && menuState.button === button) {
      closeMenu(true);
      return;
    }
    closeMenu(false);
    if (actionsLocked()) return;
    const menu = el("div", "model-menu");
    menu.id = `model-menu-${view.data.id}`;
    menu.setAttribute("role", "menu");
    menu.setAttribute("aria-label", "Regenerate with");
    const title = el("p", "model-menu-title", "Regenerate with");
    title.setAttribute("role", "presentation");
    menu.append(title);
    const wrote = view.data.model || "";
    const names = state.models.map((m) => m.name);
    if (!names.length) {
      menu.append(el("p", "model-menu-note", "No model is listed: refresh the models."));
    }
    for (const name of names) {
      const item = el("button", "model-menu-item");
      item.type = "button";
      item.setAttribute("role", "menuitem");
      item.dataset.model = name;
      item.append(el("span", "model-menu-name", name));
      if (name === wrote || name === `${wrote}:latest`) {
        item.append(el("span", "model-menu-tag", "wrote this"));
      }
      item.addEventListener("click", () => {
        closeMenu(false);
        regenerateReply(view, name);
      });
      menu.append(item);
    }
    menu.addEventListener("keydown", (event) => {
      const items = [...menu.querySelectorAll(".model-menu-item")];
      const at = items.indexOf(document.activeElement);
      let target = null;
      if (event.key === "ArrowDown") target = items[(at + 1) % items.length];
      else if (event.key === "ArrowUp") target = items[(at - 1 + items.length) % items.length];
      else if (event.key === "Home") target = items[0];
      else if (event.key === "End") target = items[items.length - 1];
      else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeMenu(true);
        return;
      } else if (event.key === "Tab") {
        closeMenu(false);
        return;
      }
      if (target) {
        event.preventDefault();
        target.focus();
      }
    });
    view.foot.append(menu);
    menuState = { menu, button, view };
    button.setAttribute("aria-expanded", "true");
    button.setAttribute("aria-controls", menu.id);
    // Under the button, or above it when there is more room there; never wider than the reply.
    const room = view.foot.clientWidth - menu.offsetWidth;
    const left = Math.max(0, Math.min(button.offsetLeft - 4, room));
    menu.style.left = `${left}px`;
    const box = dom.messages.getBoundingClientRect();
    const at = button.getBoundingClientRect();
    const below = box.bottom - at.bottom;
    const above = at.top - box.top;
    if (below < menu.offsetHeight + 8 && above > below) menu.classList.add("up");
    menu.scrollIntoView({ block: "nearest" });
    const first = menu.querySelector(".model-menu-item");
    if (first) first.focus();
  }

  document.addEventListener("click", (event) => {
    if (!menuState) return;
    if (menuState.menu.contains(event.target) || menuState.button.contains(event.target)) return;
    closeMenu(false);
  });

  // ------------------------------------------------------------------ editing a question

  function closeEditor(view, refocus) {
    if (!view.editor) return;
    view.editor.remove();
    view.editor = null;
    view.body.hidden = false;
    view.root.classList.remove("editing");
    if (refocus) {
      const edit = view.actions.querySelector('[data-action="edit"]');
      if (edit) edit.focus();
    }
  }

  function startEdit(view, draft) {
    if (actionsLocked() || !view.data) return;
    for (const other of messageViews()) {
      if (other !== view && other.editor) closeEditor(other, false);
    }
    if (view.editor) {
      view.editor.querySelector("textarea").focus();
      return;
    }
    const form = el("form", "msg-edit");
    form.noValidate = true;
    const area = el("textarea", "msg-edit-input");
    area.rows = 2;
    area.value = draft != null ? draft : view.text;
    area.setAttribute("aria-label", "Edit your message");
    const row = el("div", "msg-edit-actions");
    const hint = el(
      "span",
      "msg-edit-hint",
      "A new version is sent; the old one stays a click away."
    );
    const cancel = el("button", "btn subtle", "Cancel");
    cancel.type = "button";
    cancel.dataset.action = "edit-cancel";
    const save = el("button", "btn primary", "Save & send");
    save.type = "submit";
    save.dataset.action = "edit-save";
    row.append(hint, cancel, save);
    form.append(area, row);
    view.body.hidden = true;
    view.root.classList.add("editing");
    view.body.after(form);
    view.editor = form;
    const fit = () => {
      area.style.height = "auto";
      const most = Math.round(window.innerHeight * 0.5);
      area.style.height = `${Math.min(area.scrollHeight + 2, most)}px`;
      save.disabled = actionsLocked() || !area.value.trim();
    };
    area.addEventListener("input", fit);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeEditor(view, true);
      }
    });
    cancel.addEventListener("click", () => closeEditor(view, true));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitEdit(view, area.value);
    });
    fit();
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
    form.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------ the reply being generated

  function newGeneration(conversationId, view) {
    return {
      conversation: conversationId,
      message: null,
      accepted: false,
      text: "",
      length: 0,
      view,
      frame: 0,
      timer: 0,
      nextRenderAt: 0,
      stopping: false,
      lastFrameAt: Date.now(),
      userView: null,
      sentText: "",
      attachments: [], // the upload ids sent with the message
      kind: "send", // or "regenerate", "edit", "continue"
      started: false, // chat.started (or a token) was received
      siblings: [], // regenerate, edit: the versions at the place of the message acted on
      parent: null, // regenerate, edit: the parent of the message acted on
      restore: null, // puts the page back as it was when the frame is refused
    };
  }

  // The reply is re-rendered from its whole text at most once per animation frame, and less
  // often when rendering it takes long (a long reply): never more than a quarter of the time.
  function scheduleRender(gen) {
    if (gen.frame || gen.timer) return;
    const run = () => {
      gen.timer = 0;
      gen.frame = requestAnimationFrame(() => {
        gen.frame = 0;
        const started = performance.now();
        gen.view.render(gen.text);
        const cost = performance.now() - started;
        gen.nextRenderAt = performance.now() + cost * 3;
        scrollToBottom(false);
      });
    };
    const wait = (gen.nextRenderAt || 0) - performance.now();
    if (wait > 0) gen.timer = setTimeout(run, wait);
    else run();
  }

  function cancelRender(gen) {
    if (gen.frame) cancelAnimationFrame(gen.frame);
    if (gen.timer) clearTimeout(gen.timer);
    gen.frame = 0;
    gen.timer = 0;
  }

  function endGeneration() {
    const gen = state.gen;
    if (gen) cancelRender(gen);
    state.gen = null;
    clearTimeout(state.waitTimer);
    setStatus("");
    updateComposer();
  }

  function updateComposer() {
    const busy = state.gen !== null;
    dom.send.hidden = busy;
    dom.stop.hidden = !busy;
    dom.stop.disabled = !busy || !state.gen.accepted || state.gen.stopping || state.expired;
    const uploading = tray !== null && tray.uploading;
    dom.send.disabled = state.expired || !socket.connected || uploading;
    dom.send.title = uploading ? "Wait for the files to finish uploading" : "";
    dom.prompt.disabled = state.expired;
    updateActions();
  }

  function sendMessage() {
    if (state.expired || state.gen || state.switching) return;
    if (tray.uploading) {
      tray.flashHint("Wait for the files to finish uploading, then send.");
      return;
    }
    const text = dom.prompt.value;
    if (!text.trim()) {
      if (tray.hasReady) tray.flashHint("Type a message to send with the files.");
      return;
    }
    if (text.length > config.maxMessageChars) {
      showBanner(
        `The message has ${text.length} characters; the limit is ${config.maxMessageChars}.`
      );
      return;
    }
    const frame = { type: "chat.send", message: text };
    if (state.current) {
      frame.conversation = state.current.id;
    } else {
      if (state.draft.model) frame.model = state.draft.model;
      if (state.draft.system) frame.system = state.draft.system;
      if (Object.keys(state.draft.options).length) frame.options = state.draft.options;
    }
    const attached = tray.readyRecords();
    if (attached.length) frame.attachments = attached.map((a) => a.id);
    if (!socket.send(frame)) {
      showBanner("Not connected to the server yet; your message was not sent.", "warn");
      return;
    }
    hideBanner();
    const userView = createUserView(text, attached);
    appendView(userView);
    const view = createAssistantView(null);
    view.root.classList.add("waiting");
    view.setNote("Sending…", "muted");
    appendView(view);
    const gen = newGeneration(state.current ? state.current.id : null, view);
    gen.userView = userView;
    gen.sentText = text;
    gen.attachments = frame.attachments || [];
    gen.restore = () => {
      // Refused before the message was saved: give it back so that it can be sent again.
      userView.root.remove();
      view.root.remove();
      if (!dom.prompt.value) dom.prompt.value = text;
      autosize();
    };
    state.gen = gen;
    dom.prompt.value = "";
    autosize();
    updateComposer();
    scrollToBottom(true);
    state.stickToBottom = true;
  }

  // Replaces `node` and every message after it with `fresh` nodes (a new version, and the
  // branch that follows it); returns a function that puts them back.
  function replaceFrom(node, fresh) {
    const old = [];
    for (let at = node; at; at = at.nextElementSibling) if (viewOf.has(at)) old.push(at);
    node.before(...fresh);
    for (const gone of old) gone.remove();
    return () => {
      fresh[0].before(...old);
      for (const added of fresh) added.remove();
    };
  }

  function sendAction(frame) {
    if (actionsLocked()) return false;
    frame.conversation = state.current.id; // so that a refusal names it
    if (!socket.send(frame)) {
      showBanner("Not connected to the server yet; try again in a moment.", "warn");
      return false;
    }
    hideBanner();
    return true;
  }

  function startAction(gen) {
    state.gen = gen;
    updateComposer();
    scrollToBottom(gen.kind !== "continue");
    if (gen.kind !== "continue") state.stickToBottom = true;
  }

  // A new version of a reply (a sibling), with `model` or the conversation's.
  function regenerateReply(view, model) {
    if (!view.data || view.data.id == null) return;
    const frame = { type: "chat.regenerate", message: view.data.id };
    if (model) frame.model = model;
    if (!sendAction(frame)) return;
    const fresh = createAssistantView(null);
    fresh.root.classList.add("waiting");
    fresh.setNote("Regenerating…", "muted");
    const gen = newGeneration(state.current.id, fresh);
    gen.kind = "regenerate";
    gen.siblings = view.data.siblings || [view.data.id];
    gen.parent = view.data.parent;
    gen.restore = replaceFrom(view.root, [fresh.root]);
    startAction(gen);
  }

  // A new version of a question (a sibling) with `text`, then its reply.
  function submitEdit(view, text) {
    if (!view.data || view.data.id == null) return;
    if (!text.trim()) return;
    if (text.length > config.maxMessageChars) {
      showBanner(
        `The message has ${text.length} characters; the limit is ${config.maxMessageChars}.`
      );
      return;
    }
    if (!sendAction({ type: "chat.edit", message: view.data.id, content: text })) return;
    closeEditor(view, false);
    const userView = createUserView(text, view.attachments, null);
    const reply = createAssistantView(null);
    reply.root.classList.add("waiting");
    reply.setNote("Sending…", "muted");
    const gen = newGeneration(state.current.id, reply);
    gen.kind = "edit";
    gen.userView = userView;
    gen.sentText = text;
    gen.siblings = view.data.siblings || [view.data.id];
    gen.parent = view.data.parent;
    const putBack = replaceFrom(view.root, [userView.root, reply.root]);
    gen.restore = () => {
      putBack();
      startEdit(view, text); // the text typed is not lost
    };
    startAction(gen);
  }

  // The same reply goes on from its end.
  function continueReply(view) {
    if (!continuable(view)) return;
    if (!sendAction({ type: "chat.continue", message: view.data.id })) return;
    const before = {
      text: view.text,
      status: view.data.status,
      metrics: view.metrics,
      error: view.error,
    };
    const code = view.root.dataset.code;
    const gen = newGeneration(state.current.id, view);
    gen.kind = "continue";
    gen.message = view.data.id;
    gen.text = view.text;
    gen.length = cpLength(view.text);
    view.reopen();
    view.root.classList.add("streaming");
    view.setNote("Continuing…", "muted");
    gen.restore = () => {
      view.render(before.text);
      view.finish(before.status, before.metrics, before.error);
      if (code) view.root.dataset.code = code;
    };
    startAction(gen);
  }

  // ‹ ›: show the branch through another version of a message, where that message was.
  async function showVersion(view, siblingId, direction) {
    if (actionsLocked() || siblingId == null) return;
    const conversation = state.current;
    const index = messageViews().indexOf(view);
    const top = view.root.getBoundingClientRect().top;
    const hadFocus = view.root.contains(document.activeElement);
    state.switching = true;
    updateActions();
    let messages;
    try {
      await api(`${conversationUrl(conversation.id)}branch/`, {
        method: "POST",
        body: { message: siblingId },
      });
      messages = await fetchMessages(conversation.id);
    } catch (error) {
      if (error.status !== 401) showBanner(`Could not show that version: ${error.message}`);
      return;
    } finally {
      state.switching = false;
      updateActions();
    }
    if (!state.current || state.current.id !== conversation.id || state.gen) return;
    hideBanner();
    await loadMessages(conversation, messages, { keepScroll: true });
    const placed = messageViews()[index];
    if (!placed) return;
    dom.messages.scrollTop += placed.root.getBoundingClientRect().top - top;
    state.stickToBottom = nearBottom();
    if (hadFocus) {
      const target = [direction, "prev", "next"]
        .map((action) => `[data-action="${action}"]`)
        .map((selector) => placed.actions.querySelector(selector))
        .find((button) => button && !button.disabled);
      if (target) target.focus();
    }
  }

  // After a regenerate or an edit: the server's view of the branch (versions, times).
  let refreshRequest = 0;

  async function refreshBranch() {
    const conversation = state.current;
    if (!conversation) return;
    const request = ++refreshRequest;
    let messages;
    try {
      messages = await fetchMessages(conversation.id);
    } catch (e) {
      return; // what is shown stays; the next load corrects it
    }
    if (request !== refreshRequest) return;
    await loadMessages(conversation, messages, { keepScroll: true, quiet: true });
  }

  function stopGeneration() {
    const gen = state.gen;
    if (!gen || !gen.accepted || gen.stopping) return;
    if (socket.send({ type: "chat.stop", conversation: gen.conversation })) {
      gen.stopping = true;
      gen.view.setNote("Stopping…", "muted");
      updateComposer();
    }
  }

  function belongsToGen(frame) {
    const gen = state.gen;
    if (!gen) return false;
    if (frame.conversation && gen.conversation && frame.conversation !== gen.conversation) {
      return false;
    }
    if (frame.message != null && gen.message != null && frame.message !== gen.message) {
      return false;
    }
    return true;
  }

  function handleFrame(frame) {
    if (state.gen && belongsToGen(frame)) state.gen.lastFrameAt = Date.now();
    switch (frame.type) {
      case "chat.accepted":
        return onAccepted(frame);
      case "chat.queued":
        if (belongsToGen(frame) && state.gen.accepted) {
          // Said once, in the reply it is about (not again in the status line); a new
          // position replaces the note, and only the first is announced to screen readers.
          const text = window.ChatErrors.queued(frame, formatWait);
          state.gen.view.setNote(text, "queued");
          if (!state.gen.queuedSaid) announce(text);
          state.gen.queuedSaid = true;
          setStatus("");
        }
        return undefined;
      case "chat.started":
        return onStarted(frame);
      case "chat.token":
        return onToken(frame);
      case "chat.done":
        return onFinished(frame, "complete");
      case "chat.cancelled":
        return onFinished(frame, "cancelled");
      case "chat.error":
        return onError(frame);
      default:
        return undefined;
    }
  }

  function onAccepted(frame) {
    const gen = state.gen;
    if (!gen || gen.accepted) return;
    if (gen.conversation && frame.conversation !== gen.conversation) return;
    gen.accepted = true;
    gen.conversation = frame.conversation;
    gen.model = frame.model || null;
    if (gen.userView && frame.user_message != null) {
      // The question is saved: an edit's is a new version beside the one edited.
      const id = frame.user_message;
      const siblings = gen.kind === "edit" ? [...gen.siblings, id] : [id];
      gen.userView.setData({
        id,
        role: "user",
        parent: gen.kind === "edit" ? gen.parent : null,
        siblings,
        sibling_index: siblings.length - 1,
        content: gen.sentText,
      });
    }
    if (gen.kind !== "regenerate" && gen.kind !== "continue") gen.questionId = frame.user_message;
    else gen.questionId = gen.parent;
    gen.view.setNote(gen.kind === "continue" ? "Continuing…" : "Waiting for the model…", "muted");
    // The message is saved with its files: they leave the composer (with refused ones).
    tray.removeSent(gen.attachments);
    if (!state.current) {
      // The first message created the conversation: it becomes the open one.
      adoptConversation(frame.conversation);
    }
    updateComposer();
    refreshConversationsSoon();
  }

  function onStarted(frame) {
    const gen = state.gen;
    if (!gen) {
      // Another tab of ours started a reply here: show it (the reload resumes it).
      if (state.current && frame.conversation === state.current.id) loadMessages(state.current);
      return;
    }
    if (!belongsToGen(frame)) return;
    gen.accepted = true;
    gen.started = true;
    gen.message = frame.message;
    gen.view.setMessage(frame.message);
    if (gen.kind === "continue") {
      // The new text goes on at `offset`, the reply's length as saved.
      const offset = typeof frame.offset === "number" ? frame.offset : gen.length;
      if (offset < gen.length) {
        gen.text = Array.from(gen.text).slice(0, offset).join("");
        gen.length = offset;
      }
    } else if (!gen.view.data || gen.view.data.id !== frame.message) {
      const id = frame.message;
      const siblings = gen.kind === "regenerate" ? [...gen.siblings, id] : [id];
      gen.view.setData({
        id: frame.message,
        role: "assistant",
        parent: gen.questionId != null ? gen.questionId : null,
        siblings,
        sibling_index: siblings.length - 1,
        model: frame.model || gen.model || "",
        created_at: new Date().toISOString(),
        status: "streaming",
      });
    }
    gen.view.root.dataset.status = "streaming";
    gen.view.root.classList.remove("waiting");
    gen.view.root.classList.add("streaming");
    gen.view.setNote(gen.stopping ? "Stopping…" : "");
    setStatus("");
    updateComposer();
  }

  function onToken(frame) {
    const gen = state.gen;
    if (!gen || !belongsToGen(frame) || typeof frame.content !== "string") return;
    if (gen.message == null) {
      gen.message = frame.message;
      gen.view.setMessage(frame.message);
    }
    gen.started = true;
    gen.view.root.classList.remove("waiting");
    gen.view.root.classList.add("streaming");
    if (frame.offset > gen.length) {
      // Some text never reached us: ask for it again from what we have.
      socket.send({
        type: "chat.resume",
        conversation: gen.conversation,
        message: gen.message,
        offset: gen.length,
      });
      return;
    }
    const points = Array.from(frame.content);
    const skip = gen.length - frame.offset;
    if (skip >= points.length) return; // already have it (a resume overlapping the stream)
    gen.text += skip > 0 ? points.slice(skip).join("") : frame.content;
    gen.length += points.length - skip;
    scheduleRender(gen);
  }

  function onFinished(frame, status) {
    const gen = state.gen;
    if (!gen || !belongsToGen(frame)) return;
    if (status === "cancelled" && !gen.stopping && frame.message == null && !gen.accepted) return;
    cancelRender(gen);
    gen.view.setMessage(frame.message);
    if (gen.text || status === "complete") gen.view.render(gen.text);
    else gen.view.render("");
    gen.view.finish(status, frame.metrics || null, null);
    // Stopped by someone else (staff, or abandoned): the server says who and why.
    if (status === "cancelled" && frame.code) gen.view.setNote(errorText(frame), "muted", frame);
    else if (status === "cancelled" && frame.detail) gen.view.setNote(frame.detail, "muted");
    else if (status === "cancelled" && !gen.text) gen.view.setNote("Stopped before any text.", "muted");
    endGeneration();
    scrollToBottom(false);
    refreshConversationsSoon();
    if (gen.kind === "regenerate" || gen.kind === "edit") refreshBranch();
    if (status === "complete") loadModels(); // the model is loaded now
    loadUsage(); // the reply's tokens count against today's budget
  }

  const ATTACHMENT_CODES = new Set([
    "attachment_not_found",
    "attachment_missing",
    "attachment_unreadable",
  ]);

  function onError(frame) {
    const gen = state.gen;
    if (frame.code === "token_expired" || frame.code === "session_ended") {
      sessionExpired();
      return;
    }
    if (frame.code === "not_found" && gen && gen.accepted && !frame.conversation) {
      // The reply we follow (or its conversation) is gone: deleted elsewhere.
      gen.view.errorFrame = frame;
      gen.view.finish("failed", null, errorText(frame));
      endGeneration();
      return;
    }
    const ours =
      gen &&
      belongsToGen(frame) &&
      // An error without a conversation answers a frame of ours: the send not yet accepted.
      (frame.conversation || !gen.accepted);
    if (!ours) {
      if (frame.code === "not_found" && state.current) {
        showBanner(errorText(frame), "error", null, frame);
      } else if (frame.code && !frame.conversation) {
        showBanner(errorText(frame), "error", null, frame);
      }
      return;
    }
    const text = errorText(frame, gen.kind);
    if (!gen.accepted) {
      // Refused before anything was saved: the page is put back as it was (a message sent
      // goes back to the composer, an edit's text back to its editor).
      if (frame.conversation && !state.current) adoptConversation(frame.conversation);
      cancelRender(gen);
      endGeneration();
      if (gen.restore) gen.restore();
      updateActions();
      if (!dom.messages.querySelector(".msg")) dom.emptyChat.hidden = false;
      // The files stay attached; one the server could not use is marked so that it can go.
      if (gen.kind === "send" && ATTACHMENT_CODES.has(frame.code)) {
        tray.markRefused(frame.code, frame.detail, text);
      }
      showBanner(text, "error", null, frame);
      dom.banner.dataset.code = frame.code || "";
      if (OLLAMA_DOWN_CODES.has(frame.code)) setOllamaDown(true);
      if (frame.code === "budget_exhausted") loadUsage();
      if (frame.code === "generation_running" && state.current) {
        // Someone else's reply runs here (another tab, the API): follow it, so that it can be
        // seen, and stopped.
        socket.send({ type: "chat.subscribe", conversation: state.current.id });
        refreshBranch();
      }
      return;
    }
    cancelRender(gen);
    gen.view.render(gen.text);
    gen.view.setMessage(frame.message);
    gen.view.errorFrame = frame;
    gen.view.finish(frame.code === "interrupted" ? "interrupted" : "failed", null, text);
    gen.view.root.dataset.code = frame.code || "";
    endGeneration();
    loadUsage(); // a failed reply's tokens count too
    if (gen.kind === "regenerate" || gen.kind === "edit") refreshBranch();
  }

  function resumeAfterReconnect() {
    updateComposer();
    const gen = state.gen;
    if (!gen || state.expired) return;
    if (gen.started) {
      socket.send({
        type: "chat.resume",
        conversation: gen.conversation,
        message: gen.message,
        offset: gen.length,
      });
    } else if (gen.accepted && state.current) {
      if (gen.kind === "send") {
        // Still queued when the connection dropped: find the reply once it exists.
        waitForReply(state.current, 0);
      } else {
        // A regenerate, an edit or a continue still queued: hear it start on this socket.
        socket.send({ type: "chat.subscribe", conversation: gen.conversation });
      }
    }
  }

  // A message whose reply has not started yet (queued, or sent from another tab): look for the
  // reply every 2 s for a while, then resume it.
  function waitForReply(conversation, attempt) {
    clearTimeout(state.waitTimer);
    if (attempt > 60) return;
    state.waitTimer = setTimeout(async () => {
      if (!state.current || state.current.id !== conversation.id) return;
      let messages;
      try {
        messages = await fetchMessages(conversation.id);
      } catch (e) {
        waitForReply(conversation, attempt + 1);
        return;
      }
      const last = messages[messages.length - 1];
      if (last && last.role === "assistant") loadMessages(conversation, messages);
      else waitForReply(conversation, attempt + 1);
    }, 2000);
  }

  // A reply that stays silent for a long time may have ended where this page could not hear
  // it (the server process running it stopped): ask the REST API what became of it.
  const STALL_MS = 20000;
  setInterval(async () => {
    const gen = state.gen;
    if (!gen || !gen.started || gen.checking || Date.now() - gen.lastFrameAt < STALL_MS) {
      return;
    }
    gen.checking = true;
    try {
      const messages = await fetchMessages(gen.conversation);
      const saved = messages.find((m) => m.id === gen.message);
      if (state.gen === gen && saved && saved.status !== "streaming" && state.current) {
        loadMessages(state.current, messages);
      }
    } catch (e) {
      // try again later
    } finally {
      gen.checking = false;
      gen.lastFrameAt = Date.now();
    }
  }, 5000);

  // ------------------------------------------------------------------ conversations

  function adoptConversation(id) {
    state.current = {
      id,
      title: "",
      model: state.draft.model,
      system_prompt: state.draft.system,
      options: { ...state.draft.options },
    };
    rememberConversation(id);
    renderHeader();
    highlightActive();
  }

  function rememberConversation(id) {
    const url = new URL(window.location.href);
    if (id) url.searchParams.set("c", id);
    else url.searchParams.delete("c");
    url.searchParams.delete("m"); // a search hit's message: shown once, not on every reload
    window.history.replaceState(null, "", url);
  }

  function renderHeader() {
    const conversation = state.current;
    dom.title.textContent = conversation ? conversation.title || "Untitled conversation" : "New chat";
    const model = conversation ? conversation.model : state.draft.model;
    selectModel(model || "");
    const system = conversation ? conversation.system_prompt : state.draft.system;
    const options = conversation ? conversation.options || {} : state.draft.options;
    dom.systemPrompt.value = system || "";
    for (const name of OPTION_NAMES) {
      const input = $(`opt-${name}`);
      input.value = options[name] != null ? String(options[name]) : "";
    }
    dom.settingsStatus.textContent = "";
  }

  function highlightActive() {
    const id = state.current && state.current.id;
    for (const item of dom.convList.children) {
      const active = item.dataset.id === id;
      item.classList.toggle("active", active);
      const link = item.querySelector(".conv-link");
      if (link) {
        if (active) link.setAttribute("aria-current", "page");
        else link.removeAttribute("aria-current");
      }
    }
  }

  function conversationItem(conversation) {
    const item = el("li", "conv");
    item.dataset.id = conversation.id;
    const link = el("a", "conv-link", conversation.title || "Untitled conversation");
    link.href = `?c=${encodeURIComponent(conversation.id)}`;
    link.title = conversation.title || "";
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      openConversation(conversation.id);
      closeDrawer();
    });
    const actions = el("span", "conv-actions");
    const rename = el("button", "btn icon small conv-rename");
    rename.append(icon("rename"));
    rename.type = "button";
    rename.setAttribute("aria-label", `Rename “${conversation.title || "Untitled"}”`);
    rename.title = "Rename";
    rename.addEventListener("click", () => startRename(item, conversation));
    const remove = el("button", "btn icon small conv-delete");
    remove.append(icon("delete"));
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete “${conversation.title || "Untitled"}”`);
    remove.title = "Delete";
    remove.addEventListener("click", () => deleteConversation(conversation));
    actions.append(rename, remove);
    item.append(link, actions);
    return item;
  }

  function renderConversations() {
    dom.convList.replaceChildren(...state.conversations.map(conversationItem));
    dom.convEmpty.textContent = dom.search.value.trim()
      ? "No conversation has that in its title."
      : "No conversations yet.";
    dom.convEmpty.hidden = state.conversations.length > 0;
    dom.convMore.hidden = !state.nextPage;
    highlightActive();
  }

  let listRequest = 0;

  async function loadConversations(more) {
    const request = ++listRequest;
    let url;
    if (more && state.nextPage) {
      url = state.nextPage;
    } else {
      const source = $("conv-source");
      const params = new URLSearchParams({ page_size: "30", source: source ? source.value : "chat" });
      const query = dom.search.value.trim();
      if (query) params.set("q", query);
      url = `${urls.conversations}?${params}`;
    }
    try {
      const data = await api(url);
      if (request !== listRequest) return; // a newer search answered first
      const results = data.results || [];
      state.conversations = more ? state.conversations.concat(results) : results;
      state.nextPage = data.next;
      dom.convError.hidden = true;
      renderConversations();
      // Keep the open conversation's title in step with the list.
      if (state.current) {
        const fresh = state.conversations.find((c) => c.id === state.current.id);
        if (fresh) {
          state.current = { ...state.current, ...fresh };
          dom.title.textContent = fresh.title || "Untitled conversation";
        }
      }
    } catch (error) {
      if (request !== listRequest || error.status === 401) return;
      dom.convError.textContent = `Could not load the conversations: ${error.message}`;
      dom.convError.hidden = false;
    }
  }

  let refreshTimer = null;

  function refreshConversationsSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => loadConversations(false), 300);
  }

  function startRename(item, conversation) {
    const link = item.querySelector(".conv-link");
    const input = el("input", "conv-rename-input");
    input.type = "text";
    input.value = conversation.title || "";
    input.maxLength = 200;
    input.setAttribute("aria-label", "New title");
    link.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (!save || title === (conversation.title || "")) {
        input.replaceWith(link);
        return;
      }
      try {
        const updated = await api(conversationUrl(conversation.id), {
          method: "PATCH",
          body: { title },
        });
        Object.assign(conversation, updated);
        if (state.current && state.current.id === conversation.id) {
          state.current.title = updated.title;
          dom.title.textContent = updated.title || "Untitled conversation";
        }
        item.replaceWith(conversationItem(conversation));
        highlightActive();
      } catch (error) {
        input.replaceWith(link);
        if (error.status !== 401) showBanner(`Could not rename: ${error.message}`);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  async function deleteConversation(conversation) {
    const title = conversation.title || "Untitled conversation";
    if (!window.confirm(`Delete “${title}” and all its messages?`)) return;
    try {
      await api(conversationUrl(conversation.id), { method: "DELETE" });
    } catch (error) {
      if (error.status !== 401) showBanner(`Could not delete: ${error.message}`);
      return;
    }
    state.conversations = state.conversations.filter((c) => c.id !== conversation.id);
    renderConversations();
    if (state.current && state.current.id === conversation.id) newChat();
  }

  async function fetchMessages(id) {
    let url = `${conversationUrl(id)}messages/?page_size=500`;
    let messages = [];
    for (let page = 0; url && page < 20; page += 1) {
      const data = await api(url);
      messages = messages.concat(data.results || []);
      url = data.next;
    }
    return messages;
  }

  async function openConversation(id) {
    if (state.current && state.current.id === id && state.gen) return;
    let conversation = state.conversations.find((c) => c.id === id);
    try {
      if (!conversation) conversation = await api(conversationUrl(id));
    } catch (error) {
      if (error.status === 404) {
        showBanner("That conversation does not exist (any more).", "warn");
        newChat();
      } else if (error.status !== 401) {
        showBanner(`Could not open the conversation: ${error.message}`);
      }
      return;
    }
    endGeneration();
    hideBanner();
    state.current = { ...conversation };
    rememberConversation(id);
    renderHeader();
    highlightActive();
    await loadMessages(state.current);
  }

  // ------------------------------------------------------------------ search hits

  function viewOfMessage(messageId) {
    return messageViews().find((view) => view.data && view.data.id === messageId) || null;
  }

  // A search hit (static/chat/search.js): the conversation, on the branch through the message
  // (switched to it, as the ‹ › pager does, when another branch is shown), scrolled to the
  // message and marked for a moment.
  async function openConversationAt(id, messageId) {
    if (!(state.current && state.current.id === id && viewOfMessage(messageId))) {
      await openConversation(id);
    }
    if (messageId == null || !state.current || state.current.id !== id) return;
    let view = viewOfMessage(messageId);
    if (!view && !state.gen && !actionsLocked()) {
      try {
        await api(`${conversationUrl(id)}branch/`, { method: "POST", body: { message: messageId } });
        const messages = await fetchMessages(id);
        if (!state.current || state.current.id !== id) return;
        await loadMessages(state.current, messages, { keepScroll: true });
      } catch (error) {
        if (error.status !== 401) showBanner(`Could not show that message: ${error.message}`);
        return;
      }
      view = viewOfMessage(messageId);
    }
    if (!view) {
      showBanner("That message is not in this conversation any more.", "warn");
      return;
    }
    view.root.scrollIntoView({ block: "center" });
    state.stickToBottom = nearBottom();
    view.root.classList.remove("search-target", "search-target-fading");
    view.root.classList.add("search-target");
    clearTimeout(view.searchTimer);
    view.searchTimer = setTimeout(() => {
      view.root.classList.add("search-target-fading");
      view.searchTimer = setTimeout(() => {
        view.root.classList.remove("search-target", "search-target-fading");
      }, 1300);
    }, 1500);
    announce("Showing the message found.");
  }

  function messageView(message) {
    if (message.role === "user") {
      return createUserView(message.content, message.attachments, message);
    }
    const view = createAssistantView(message);
    view.render(message.content);
    if (message.status === "streaming") {
      view.root.dataset.status = "streaming";
    } else {
      const failure =
        message.status === "failed" || message.status === "interrupted"
          ? { code: message.error_code || message.status, detail: message.error }
          : null;
      view.errorFrame = failure;
      view.finish(message.status, message.metrics, failure ? errorText(failure) : null);
      if (message.error_code) view.root.dataset.code = message.error_code;
    }
    return view;
  }

  // Whether the view shown for a message can stay as it is (its text and state unchanged):
  // then an open editor, an expanded "Details", the focus and the scroll position stay too.
  function reusable(view, message) {
    if (!view || view.role !== message.role || view.text !== message.content) return false;
    if (message.role === "user") return true;
    return (
      message.status !== "streaming" &&
      view.data !== null &&
      view.data.status === message.status &&
      !view.root.classList.contains("streaming")
    );
  }

  // Shows `messages` (a branch, oldest first), keeping the views of the messages already shown.
  function renderBranch(messages) {
    const shown = new Map();
    for (const view of messageViews()) {
      if (view.data && view.data.id != null) shown.set(view.data.id, view);
    }
    const views = messages.map((message) => {
      const view = shown.get(message.id);
      if (!reusable(view, message)) return messageView(message);
      shown.delete(message.id);
      view.setData(message);
      const metrics = message.metrics;
      if (
        view.role === "assistant" &&
        metrics &&
        (!view.metrics || (metrics.context && !view.metrics.context))
      ) {
        view.finish(message.status, metrics, view.error);
      }
      return view;
    });
    const keep = new Set(views.map((view) => view.root));
    for (const node of [...dom.messages.querySelectorAll(":scope > .msg")]) {
      if (!keep.has(node)) node.remove();
    }
    let anchor = dom.emptyChat;
    for (const view of views) {
      if (anchor.nextElementSibling !== view.root) anchor.after(view.root);
      anchor = view.root;
    }
    dom.emptyChat.hidden = messages.length > 0;
    return views;
  }

  // `options.keepScroll`: stay where the reader is (unless at the bottom); `options.quiet`: a
  // refresh, dropped when a generation has started since.
  async function loadMessages(conversation, prefetched, options) {
    const opts = options || {};
    let messages = prefetched;
    if (!messages) {
      try {
        messages = await fetchMessages(conversation.id);
      } catch (error) {
        if (error.status !== 401 && !opts.quiet) {
          showBanner(`Could not load the messages: ${error.message}`);
        }
        return;
      }
    }
    if (!state.current || state.current.id !== conversation.id) return;
    if (opts.quiet && state.gen) return;
    if (state.gen && state.gen.conversation === conversation.id && state.gen.message == null) {
      // A send of ours is on its way: keep its views until its reply exists.
      const last = messages[messages.length - 1];
      if (!last || last.role !== "assistant") return;
    }
    endGeneration();
    closeMenu(false);
    const views = renderBranch(messages);
    if (!opts.keepScroll) {
      scrollToBottom(true);
      state.stickToBottom = true;
    } else {
      scrollToBottom(false);
    }
    const at = messages.findIndex((m) => m.role === "assistant" && m.status === "streaming");
    if (at >= 0) {
      // Generating right now (this page was reloaded, or the reply was sent from elsewhere):
      // show what is saved and receive the rest over the socket.
      const message = messages[at];
      const gen = newGeneration(conversation.id, views[at]);
      gen.accepted = true;
      gen.started = true;
      gen.message = message.id;
      gen.text = message.content;
      gen.length = cpLength(gen.text);
      views[at].root.classList.add("streaming");
      state.gen = gen;
      updateComposer();
      if (socket.connected) resumeAfterReconnect();
    } else {
      const last = messages[messages.length - 1];
      const recent = last && Date.now() - Date.parse(last.created_at) < 10 * 60 * 1000;
      if (last && last.role === "user" && recent) {
        // Sent, and the reply has not started: probably queued.
        setStatus("Waiting for the reply…");
        waitForReply(conversation, 0);
      }
    }
  }

  function newChat() {
    endGeneration();
    closeMenu(false);
    hideBanner();
    state.current = null;
    rememberConversation(null);
    dom.messages.querySelectorAll(".msg").forEach((node) => node.remove());
    dom.emptyChat.hidden = false;
    renderHeader();
    highlightActive();
    dom.prompt.focus();
  }

  // ------------------------------------------------------------------ models

  function selectModel(name) {
    if (name && ![...dom.model.options].some((o) => o.value === name)) {
      const option = el("option", "", `${name} (not installed)`);
      option.value = name;
      option.dataset.missing = "true";
      dom.model.append(option);
    }
    dom.model.value = name;
    updateModelDot();
  }

  function updateModelDot() {
    const name = dom.model.value || config.defaultModel || (state.models[0] && state.models[0].name);
    const model = state.models.find((m) => m.name === name || m.name === `${name}:latest`);
    const loaded = Boolean(model && model.loaded);
    dom.modelDot.classList.toggle("loaded", loaded);
    dom.modelDot.title = model
      ? loaded
        ? "Loaded in memory: answers start fast"
        : "Not loaded: the first reply waits for the model to load"
      : "";
  }

  async function loadModels() {
    let data;
    dom.modelsRefresh.disabled = true;
    try {
      data = await api(urls.models);
    } catch (error) {
      state.models = [];
      fillModels();
      if (error.status !== 401) {
        const code = error.data && error.data.code;
        // Ollama (not this server) failed to list its models: the indicator says so too.
        setOllamaDown(OLLAMA_DOWN_CODES.has(code));
        const why = code === "ollama_unreachable"
          ? `Ollama is unreachable: ${error.message}`
          : `Could not list the models: ${error.message}`;
        dom.modelsNote.textContent = why;
        dom.modelsNote.className = "models-note error";
        dom.modelsNote.hidden = false;
      }
      return;
    } finally {
      dom.modelsRefresh.disabled = false;
    }
    state.models = data.models || [];
    fillModels();
    setOllamaDown(false); // one host at least answered
    const unreachable = data.unreachable || [];
    if (unreachable.length) {
      dom.modelsNote.textContent = `Unreachable Ollama host${unreachable.length > 1 ? "s" : ""}: ${unreachable.map((u) => u.host).join(", ")}`;
      dom.modelsNote.className = "models-note warn";
      dom.modelsNote.hidden = false;
    } else if (!state.models.length) {
      dom.modelsNote.textContent = "No model is installed on the Ollama server yet.";
      dom.modelsNote.className = "models-note warn";
      dom.modelsNote.hidden = false;
    } else {
      dom.modelsNote.hidden = true;
    }
  }

  function fillModels() {
    const wanted = state.current ? state.current.model : state.draft.model;
    const options = [];
    const serverDefault = config.defaultModel || (state.models[0] && state.models[0].name);
    const fallback = el("option", "", serverDefault ? `Server default (${serverDefault})` : "Server default");
    fallback.value = "";
    options.push(fallback);
    for (const model of state.models) {
      const parts = [model.name, formatSize(model.size)];
      if (model.details && model.details.parameter_size) parts.push(model.details.parameter_size);
      parts.push(model.loaded ? "● loaded" : "○ not loaded");
      const option = el("option", "", parts.filter(Boolean).join(" · "));
      option.value = model.name;
      option.dataset.loaded = String(Boolean(model.loaded));
      options.push(option);
    }
    dom.model.replaceChildren(...options);
    dom.model.disabled = false;
    selectModel(wanted || "");
  }

  async function changeModel() {
    const name = dom.model.value;
    updateModelDot();
    localStorage.setItem(MODEL_KEY, name);
    if (!state.current) {
      state.draft.model = name;
      return;
    }
    const conversation = state.current;
    try {
      const updated = await api(conversationUrl(conversation.id), {
        method: "PATCH",
        body: { model: name },
      });
      if (state.current && state.current.id === conversation.id) {
        state.current = { ...state.current, ...updated };
      }
    } catch (error) {
      if (error.status !== 401) showBanner(`Could not change the model: ${error.message}`);
    }
  }

  // ------------------------------------------------------------------ settings

  function readOptions() {
    const options = {};
    const errors = [];
    for (const name of OPTION_NAMES) {
      const input = $(`opt-${name}`);
      const raw = input.value.trim();
      input.removeAttribute("aria-invalid");
      if (raw === "") continue;
      const value = Number(raw);
      const limits = config.optionLimits[name];
      let problem = null;
      if (!Number.isFinite(value)) problem = "must be a number";
      else if (limits && limits.integer && !Number.isInteger(value)) problem = "must be a whole number";
      else if (limits && (value < limits.min || value > limits.max)) {
        problem = `must be between ${limits.min} and ${limits.max}`;
      }
      if (problem) {
        input.setAttribute("aria-invalid", "true");
        errors.push(`${input.closest("label").firstChild.textContent.trim()} ${problem}`);
      } else {
        options[name] = value;
      }
    }
    return { options, errors };
  }

  async function saveSettings(event) {
    event.preventDefault();
    const { options, errors } = readOptions();
    if (errors.length) {
      dom.settingsStatus.textContent = errors.join("; ");
      dom.settingsStatus.className = "settings-status error";
      return;
    }
    const system = dom.systemPrompt.value;
    if (!state.current) {
      state.draft.system = system;
      state.draft.options = options;
      dom.settingsStatus.textContent = "Saved: used for this new chat.";
      dom.settingsStatus.className = "settings-status ok";
      return;
    }
    const conversation = state.current;
    // Options set through the API that this form does not show (seed, stop...) are kept.
    const merged = { ...(conversation.options || {}) };
    for (const name of OPTION_NAMES) delete merged[name];
    Object.assign(merged, options);
    try {
      const updated = await api(conversationUrl(conversation.id), {
        method: "PATCH",
        body: { system_prompt: system, options: merged },
      });
      if (state.current && state.current.id === conversation.id) {
        state.current = { ...state.current, ...updated };
      }
      dom.settingsStatus.textContent = "Saved.";
      dom.settingsStatus.className = "settings-status ok";
    } catch (error) {
      if (error.status === 401) return;
      let text = error.message;
      if (error.data && typeof error.data === "object" && !error.data.detail) {
        text = Object.entries(error.data)
          .map(([key, value]) => `${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
          .join("; ");
      }
      dom.settingsStatus.textContent = `Not saved: ${text}`;
      dom.settingsStatus.className = "settings-status error";
    }
  }

  // ------------------------------------------------------------------ layout

  function openDrawer() {
    dom.app.classList.add("drawer-open");
    dom.backdrop.hidden = false;
    dom.openSidebar.setAttribute("aria-expanded", "true");
    dom.sidebar.focus(); // not the search box: that would open a phone's keyboard
  }

  function closeDrawer() {
    dom.app.classList.remove("drawer-open");
    dom.backdrop.hidden = true;
    dom.openSidebar.setAttribute("aria-expanded", "false");
  }

  function autosize() {
    dom.prompt.style.height = "auto";
    dom.prompt.style.height = `${Math.min(dom.prompt.scrollHeight + 2, 240)}px`;
  }

  // ------------------------------------------------------------------ wiring

  dom.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  dom.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  dom.prompt.addEventListener("input", autosize);
  dom.stop.addEventListener("click", stopGeneration);
  dom.newChat.addEventListener("click", () => {
    newChat();
    closeDrawer();
  });
  dom.model.addEventListener("change", changeModel);
  dom.modelsRefresh.addEventListener("click", loadModels);
  dom.settingsToggle.addEventListener("click", () => {
    dom.settings.hidden = !dom.settings.hidden;
    dom.settingsToggle.setAttribute("aria-expanded", String(!dom.settings.hidden));
  });
  dom.settings.addEventListener("submit", saveSettings);
  let searchTimer = null;
  dom.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadConversations(false), 250);
  });
  dom.convMore.addEventListener("click", () => loadConversations(true));
  // The titles filter as the list reloads; the text of messages is searched by search.js.
  const searchPanel = new window.ChatSearch.SearchPanel({
    input: dom.search,
    section: $("search-hits"),
    list: $("search-list"),
    note: $("search-note"),
    more: $("search-more"),
    url: urls.search,
    api,
    params: () => ({ source: $("conv-source").value }),
    onOpen: (id, messageId) => {
      openConversationAt(id, messageId);
      closeDrawer();
    },
  });
  $("conv-source").addEventListener("change", () => {
    loadConversations(false);
    searchPanel.refresh();
  });
  // Conversations added elsewhere on the page (an import: static/chat/transfer.js).
  document.addEventListener("chat:conversations-changed", () => loadConversations(false));
  dom.openSidebar.addEventListener("click", openDrawer);
  dom.closeSidebar.addEventListener("click", closeDrawer);
  dom.backdrop.addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDrawer();
  });

  tray = new window.ChatAttachments.AttachmentTray({
    tray: dom.attachTray,
    list: dom.attachList,
    hint: dom.attachHint,
    input: dom.fileInput,
    attachButton: dom.attach,
    menuButton: dom.recentFiles,
    menu: dom.recentMenu,
    dropZone: dom.chatMain,
    overlay: dom.dropOverlay,
    pasteTarget: dom.prompt,
    uploadsUrl: urls.uploads,
    filesUrl: urls.files,
    maxBytes: config.uploads.maxBytes,
    maxCount: config.uploads.maxAttachments,
    accept: config.uploads.accept,
    csrfToken,
    onChange: updateComposer,
    onExpired: sessionExpired,
  });

  state.stickToBottom = true;
  setConnection("connecting");
  socket.connect();
  loadModels();
  loadConversations(false);
  loadUsage();
  const initial = new URL(window.location.href).searchParams.get("c");
  // ?c=<conversation>&m=<message>: a search hit's link, opened in a new tab.
  const initialMessage = Number(new URL(window.location.href).searchParams.get("m")) || null;
  if (initial && initialMessage) openConversationAt(initial, initialMessage);
  else if (initial) openConversation(initial);
  else renderHeader();
})();
