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

  function formatSize(bytes) {
    if (typeof bytes !== "number") return "";
    const gb = bytes / 1e9;
    return `${gb.toFixed(gb < 1 ? 2 : 1)} GB`;
  }

  function showBanner(text, kind, link) {
    dom.banner.replaceChildren();
    dom.banner.className = `banner ${kind || "error"}`;
    dom.banner.append(document.createTextNode(text));
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

  // ------------------------------------------------------------------ error texts

  function seconds(value) {
    return value ? `${value} s` : "a moment";
  }

  function errorText(frame) {
    const detail = frame.detail || "";
    switch (frame.code) {
      case "ollama_unreachable":
        return `Ollama is not reachable, so no reply can be generated right now. ${detail}`;
      case "model_not_found":
        return `The model is not installed on the Ollama server: pick another model, or pull it first. (${detail})`;
      case "queue_full":
        return `The server is busy: the queue for this model is full. Try again in ${seconds(frame.retry_after)}.`;
      case "ollama_busy":
        return `Ollama is busy. Try again in ${seconds(frame.retry_after)}.`;
      case "rate_limited":
        return `You are sending messages too quickly. Try again in ${seconds(frame.retry_after)}.`;
      case "too_many_generations":
        return "You already have replies being generated: wait for one to finish, or stop it.";
      case "ollama_timeout":
        return "Ollama stopped sending (timeout). What was generated is kept.";
      case "ollama_stream_error":
      case "ollama_protocol_error":
      case "ollama_error":
        return `Ollama reported an error: ${detail}`;
      case "bad_request":
        return `Ollama refused the request: ${detail}`;
      case "gate_lost":
        return "The server lost its place for this reply. Try again.";
      case "interrupted":
        return "The reply was interrupted: the server stopped before it finished.";
      case "not_found":
        return "This conversation no longer exists.";
      case "internal_error":
        return "The server failed while generating. What was generated is kept.";
      case "token_expired":
        return "Your session expired, log in again.";
      case "model_lacks_vision":
        return "This model can't see images; pick a vision model such as llava, or remove the image. Your files are still attached.";
      case "attachment_not_found":
        return "An attached file no longer exists (it was deleted): remove it and attach it again.";
      case "attachment_missing":
        return `An attached file is missing on the server: remove it and upload it again. (${detail})`;
      case "attachment_unreadable":
        return `An attached file could not be read: ${detail}`;
      case "too_many_attachments":
        return `At most ${config.uploads.maxAttachments} files go with one message.`;
      default:
        return detail || "Something went wrong.";
    }
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

  function setConnection(name) {
    dom.conn.dataset.state = name;
    dom.conn.querySelector(".conn-text").textContent = CONNECTION_TEXT[name] || name;
    dom.conn.title =
      name === "connected"
        ? "Live connection to the server"
        : name === "expired"
          ? "Your session expired"
          : "Trying to reach the server; replies resume where they stopped";
    updateComposer();
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

  function figuresList(metrics) {
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

  function createUserView(text, attachments) {
    const root = el("article", "msg msg-user");
    const chips = window.ChatAttachments.messageChips(attachments, urls.uploads);
    if (chips) root.append(chips);
    const body = el("div", "msg-body", text);
    root.append(body);
    return { root };
  }

  function createAssistantView(data) {
    const root = el("article", "msg msg-assistant");
    const body = el("div", "msg-body markdown");
    const meta = el("div", "msg-meta");
    const note = el("div", "msg-note");
    note.hidden = true;
    const details = el("div", "msg-details");
    root.append(body, note, meta, details);
    const renderer = window.ChatMarkdown.createRenderer();
    const view = {
      root,
      body,
      text: "",
      render(text) {
        view.text = text;
        body.replaceChildren(renderer.render(text));
      },
      setNote(text, kind) {
        note.textContent = text || "";
        note.className = `msg-note ${kind || ""}`;
        note.hidden = !text;
      },
      setMessage(id) {
        if (id != null) root.dataset.message = String(id);
      },
      finish(status, metrics, error) {
        root.classList.remove("streaming", "waiting");
        root.dataset.status = status;
        meta.replaceChildren();
        details.replaceChildren();
        if (status === "cancelled") meta.append(el("span", "badge", "Stopped"));
        if (status === "interrupted") meta.append(el("span", "badge warn", "Interrupted"));
        if (status === "failed") meta.append(el("span", "badge bad", "Failed"));
        if (error) view.setNote(error, "error");
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
      },
    };
    view.setMessage(data && data.id);
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

  // Copy buttons of code blocks (delegated: the code blocks are re-rendered while streaming).
  dom.messages.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-btn");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("pre code");
    const text = code ? code.textContent : "";
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      const area = el("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "copy-buffer";
      document.body.append(area);
      area.select();
      try {
        ok = document.execCommand("copy");
      } catch (e2) {
        ok = false;
      }
      area.remove();
    }
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });

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
  }

  function sendMessage() {
    if (state.expired || state.gen) return;
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
    state.gen = gen;
    dom.prompt.value = "";
    autosize();
    updateComposer();
    scrollToBottom(true);
    state.stickToBottom = true;
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
          const text = `Waiting in the queue: position ${frame.position}`;
          state.gen.view.setNote(text, "queued");
          setStatus(text);
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
    gen.view.setNote("Waiting for the model…", "muted");
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
    gen.message = frame.message;
    gen.view.setMessage(frame.message);
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
    if (status === "cancelled" && !gen.text) gen.view.setNote("Stopped before any text.", "muted");
    endGeneration();
    scrollToBottom(false);
    refreshConversationsSoon();
    if (status === "complete") loadModels(); // the model is loaded now
  }

  const ATTACHMENT_CODES = new Set([
    "attachment_not_found",
    "attachment_missing",
    "attachment_unreadable",
  ]);

  function onError(frame) {
    const gen = state.gen;
    if (frame.code === "token_expired") {
      sessionExpired();
      return;
    }
    if (frame.code === "not_found" && gen && gen.accepted && !frame.conversation) {
      // The reply we follow (or its conversation) is gone: deleted elsewhere.
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
        showBanner(errorText(frame));
      } else if (frame.code && !frame.conversation) {
        showBanner(errorText(frame));
      }
      return;
    }
    const text = errorText(frame);
    if (!gen.accepted) {
      // Refused before the message was saved: give it back so that it can be sent again.
      if (frame.conversation && !state.current) adoptConversation(frame.conversation);
      gen.userView.root.remove();
      gen.view.root.remove();
      if (!dom.prompt.value) dom.prompt.value = gen.sentText;
      autosize();
      endGeneration();
      if (!dom.messages.querySelector(".msg")) dom.emptyChat.hidden = false;
      // The files stay attached; one the server could not use is marked so that it can go.
      if (ATTACHMENT_CODES.has(frame.code)) tray.markRefused(frame.code, frame.detail, text);
      showBanner(text, "error");
      dom.banner.dataset.code = frame.code || "";
      return;
    }
    cancelRender(gen);
    gen.view.render(gen.text);
    gen.view.setMessage(frame.message);
    gen.view.finish(frame.code === "interrupted" ? "interrupted" : "failed", null, text);
    gen.view.root.dataset.code = frame.code || "";
    endGeneration();
  }

  function resumeAfterReconnect() {
    updateComposer();
    const gen = state.gen;
    if (!gen || state.expired) return;
    if (gen.message != null) {
      socket.send({
        type: "chat.resume",
        conversation: gen.conversation,
        message: gen.message,
        offset: gen.length,
      });
    } else if (gen.accepted && state.current) {
      // Still queued when the connection dropped: find the reply once it exists.
      waitForReply(state.current, 0);
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
    if (!gen || gen.message == null || gen.checking || Date.now() - gen.lastFrameAt < STALL_MS) {
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
      const params = new URLSearchParams({ page_size: "30", source: "chat" });
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

  async function loadMessages(conversation, prefetched) {
    let messages = prefetched;
    if (!messages) {
      try {
        messages = await fetchMessages(conversation.id);
      } catch (error) {
        if (error.status !== 401) showBanner(`Could not load the messages: ${error.message}`);
        return;
      }
    }
    if (!state.current || state.current.id !== conversation.id) return;
    if (state.gen && state.gen.conversation === conversation.id && state.gen.message == null) {
      // A send of ours is on its way: keep its views until its reply exists.
      const last = messages[messages.length - 1];
      if (!last || last.role !== "assistant") return;
    }
    endGeneration();
    dom.messages.querySelectorAll(".msg").forEach((node) => node.remove());
    let streaming = null;
    for (const message of messages) {
      if (message.role === "user") {
        appendView(createUserView(message.content, message.attachments));
        continue;
      }
      const view = createAssistantView(message);
      view.render(message.content);
      appendView(view);
      if (message.status === "streaming") {
        streaming = { message, view };
      } else {
        const error =
          message.status === "failed" || message.status === "interrupted"
            ? errorText({ code: message.error_code || message.status, detail: message.error })
            : null;
        view.finish(message.status, message.metrics, error);
        if (message.error_code) view.root.dataset.code = message.error_code;
      }
    }
    dom.emptyChat.hidden = messages.length > 0;
    scrollToBottom(true);
    state.stickToBottom = true;
    if (streaming) {
      // Generating right now (this page was reloaded, or the reply was sent from elsewhere):
      // show what is saved and receive the rest over the socket.
      const gen = newGeneration(conversation.id, streaming.view);
      gen.accepted = true;
      gen.message = streaming.message.id;
      gen.text = streaming.message.content;
      gen.length = cpLength(gen.text);
      streaming.view.root.classList.add("streaming");
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
        const why =
          error.data && error.data.code === "ollama_unreachable"
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
  const initial = new URL(window.location.href).searchParams.get("c");
  if (initial) openConversation(initial);
  else renderHeader();
})();
