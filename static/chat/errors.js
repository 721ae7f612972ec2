// What the chat tells a person when something goes wrong: a sentence in words for every error
// code of docs/api.md ("Error codes"), with the technical part (code, the server's detail, the
// HTTP status) behind a "Details" disclosure. An unknown code falls back to the server's detail.
// Also the words of the queue ("The GPU is busy: you are 2nd in line") and of the connection
// indicator when the server answers but Ollama does not.
(function () {
  "use strict";

  function seconds(value) {
    return value ? `${value} s` : "a moment";
  }

  // 1 → "1st", 2 → "2nd", 3 → "3rd", 11 → "11th", 22 → "22nd".
  function ordinal(n) {
    const v = Number(n);
    if (!Number.isFinite(v)) return String(n);
    const tens = v % 100;
    const suffix =
      tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[v % 10] || "th";
    return `${v}${suffix}`;
  }

  // `kind`: what the frame answered ("send", "regenerate", "edit", "continue"), when known.
  // `ctx`: {budgetText(frame), maxAttachments}.
  function text(frame, kind, ctx) {
    const detail = frame.detail || "";
    const action = kind && kind !== "send";
    const wait = seconds(frame.retry_after);
    const c = ctx || {};
    switch (frame.code) {
      // Ollama
      case "ollama_unreachable":
        return "Ollama is not reachable, so no reply can be generated right now. Try again once it is back.";
      case "ollama_timeout":
        return "Ollama stopped answering mid-reply (it sent nothing for too long). What was generated is kept.";
      case "ollama_stream_error":
        return "Ollama stopped answering mid-reply: it reported an error. What was generated is kept.";
      case "ollama_protocol_error":
        return "Ollama stopped answering mid-reply: its stream broke off. What was generated is kept.";
      case "ollama_error":
        return "Ollama could not answer this request. Try again, or pick another model.";
      case "ollama_busy":
        return `Ollama is busy with other work. Try again in ${wait}.`;
      case "bad_request":
        return "Ollama refused the request: the model may not support what was asked (see Details).";
      case "model_not_found":
        return "The model is not installed on the Ollama server: pick another model, or pull it first.";
      case "model_lacks_vision":
        return "This model can't see images; pick a vision model such as llava, or remove the image. Your files are still attached.";
      // The gateway's queue and limits
      case "queue_full":
        return `The server is busy: the queue for this model is full. Try again in ${wait}.`;
      case "queue_unavailable":
        return `The server's queue cannot be reached right now; nothing was sent. Try again in ${wait}.`;
      case "gate_lost":
        return "The server lost its place for this reply (its queue went away). Try again.";
      case "rate_limited":
        return `You are sending messages too quickly. Try again in ${wait}.`;
      case "budget_exhausted":
        return c.budgetText ? c.budgetText(frame) : "Your daily token budget is used up; it resets at midnight.";
      case "too_many_generations":
        return "You already have replies being generated: wait for one to finish, or stop it.";
      case "generation_running":
        return "A reply is still being generated in this conversation (here or in another tab): wait for it to finish, or stop it, then try again.";
      case "stopped_by_staff":
        return "An administrator stopped this reply to free the GPU. What was generated is kept.";
      case "abandoned":
        return "This reply was stopped because nobody was following it while others waited. What was generated is kept.";
      case "not_generating":
        return "Nothing is being generated in this conversation any more.";
      // The message and its actions
      case "empty_message":
        return "The message is empty: write something first.";
      case "message_too_long":
        return "The message is too long for this server: shorten it, or attach the text as a file.";
      case "request_too_long":
        return "The messages together are too long for this server: shorten them.";
      case "request_too_large":
        return "The request is too large for this server.";
      case "invalid_options":
        return "One of the settings (temperature, max tokens, context…) is out of range: check the conversation's settings.";
      case "invalid_keep_alive":
        return "The keep-alive setting is not a duration (use e.g. 5m or 1h).";
      case "keep_alive_forbidden":
        return "Only staff may keep a model loaded that long, or unload it.";
      case "invalid_input":
      case "invalid_frame":
      case "unknown_type":
        return "The server could not understand this request. Reload the page and try again.";
      case "wrong_message_role":
        return "That action does not apply to this message.";
      case "nothing_to_continue":
        return "This reply is complete: there is nothing to continue.";
      case "no_question":
        return "This reply answers no saved question, so it cannot be regenerated or continued.";
      case "not_found":
        return action
          ? "That message no longer exists (deleted in another tab?): reload the conversation."
          : "This conversation no longer exists.";
      // Search
      case "empty_query":
        return "Type something to search for.";
      case "query_too_long":
        return "That search is too long: use fewer words.";
      case "invalid_source":
        return "That filter is not one of the conversation kinds: pick another.";
      // Export, import and share
      case "invalid_import":
        return "This file cannot be imported: nothing was imported. Details say what is wrong in it.";
      case "invalid_format":
        return "Conversations export as Markdown or JSON only.";
      case "sharing_disabled":
        return "Share links are switched off on this server.";
      case "empty_conversation":
        return "There is nothing to share yet: the conversation has no message.";
      case "invalid_link":
        return "That share link is not one of this conversation's.";
      // Files
      case "too_many_attachments":
        return `At most ${c.maxAttachments || 10} files go with one message.`;
      case "attachment_not_found":
        return "An attached file no longer exists (it was deleted): remove it and attach it again.";
      case "attachment_missing":
        return "An attached file is missing on the server: remove it and upload it again.";
      case "attachment_unreadable":
        return "An attached file could not be read (see Details): remove it, or attach another.";
      case "attachment_unavailable":
        return `The server cannot read attached files right now. Try again in ${wait}.`;
      // Signing in and API keys
      case "token_expired":
      case "session_ended":
      case "auth_required":
      case "not_authenticated":
        return "Your session expired, log in again.";
      case "invalid_api_key":
        return "That API key does not work (unknown, revoked or expired).";
      case "insufficient_scope":
        return "That API key may not do this: use the web session or a key with the chat scope.";
      case "too_many_keys":
        return "You already have as many API keys as allowed: revoke one first.";
      case "throttled":
        return `Too many attempts. Try again in ${wait}.`;
      case "permission_denied":
        return "Your account is not allowed to do this.";
      case "unsupported_parameter":
        return "A parameter of this request is not supported by the gateway.";
      // The server itself
      case "interrupted":
        return "The reply was interrupted: the server stopped before it finished. What was generated is kept.";
      case "shutting_down":
        return `The server is restarting. Try again in ${wait}.`;
      case "redis_unavailable":
        return `The server cannot reach its cache right now; nothing was sent. Try again in ${wait}.`;
      case "database_unavailable":
        return `The server cannot reach its database right now. Try again in ${wait}.`;
      case "internal_error":
        return "The server failed while generating. What was generated is kept.";
      default:
        return detail || "Something went wrong.";
    }
  }

  // The technical part, behind a "Details" disclosure; null when there is nothing to add.
  function details(frame) {
    if (!frame) return null;
    const rows = [];
    if (frame.code) rows.push(["Code", frame.code]);
    if (frame.detail) rows.push(["Detail", frame.detail]);
    if (frame.status != null) rows.push(["Status", String(frame.status)]);
    if (frame.reason) rows.push(["Reason", frame.reason]);
    if (frame.retry_after != null) rows.push(["Retry after", `${frame.retry_after} s`]);
    if (!rows.length) return null;
    const box = document.createElement("details");
    box.className = "error-details";
    const summary = document.createElement("summary");
    summary.textContent = "Details";
    const list = document.createElement("dl");
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }
    box.append(summary, list);
    return box;
  }

  // Fills `node` with the sentence (in a span of its own) and its details.
  function fill(node, sentence, frame) {
    const words = document.createElement("span");
    words.className = "error-text";
    words.textContent = sentence;
    node.replaceChildren(words);
    const more = details(frame);
    if (more) node.append(" ", more);
  }

  function queued(frame, formatWait) {
    const wait =
      frame.estimated_wait == null || !formatWait ? "" : `, about ${formatWait(frame.estimated_wait)} to wait`;
    const place = frame.position == null ? "waiting in line" : `you are ${ordinal(frame.position)} in line`;
    return `The GPU is busy: ${place}${wait}.`;
  }

  window.ChatErrors = { text, details, fill, queued, ordinal };
})();
