// The page of a share link (/s/<token>): renders the snapshot embedded by the server with
// json_script. Assistant text goes through ChatMarkdown (DOM nodes only, never parsed as
// HTML), as in the chat; what people typed is set as text.
(function () {
  "use strict";

  const node = document.getElementById("share-data");
  const list = document.getElementById("share-messages");
  if (!node || !list || !window.ChatMarkdown) return;
  const data = JSON.parse(node.textContent);

  function el(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text != null) made.textContent = text;
    return made;
  }

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  const STATUS = {
    cancelled: "Stopped before the end.",
    failed: "This reply failed.",
    interrupted: "This reply was interrupted.",
  };

  const views = [];
  for (const message of data.messages || []) {
    const user = message.role === "user";
    const root = el("article", `msg ${user ? "msg-user" : "msg-assistant"}`);
    root.dataset.role = message.role;
    const byline = el("div", "msg-byline");
    if (!user && message.model) byline.append(el("span", "msg-model", message.model));
    const shown = when(message.created_at);
    if (shown) {
      const time = el("time", "msg-time", shown);
      time.dateTime = message.created_at;
      byline.append(time);
    }
    if (byline.childNodes.length) root.append(byline);
    if (Array.isArray(message.attachments) && message.attachments.length) {
      root.append(el("p", "share-attachments", `Attached: ${message.attachments.join(", ")}`));
    }
    if (user) {
      root.append(el("div", "msg-body", message.content || ""));
    } else {
      const body = el("div", "msg-body markdown");
      body.append(window.ChatMarkdown.createRenderer().render(message.content || ""));
      root.append(body);
      if (STATUS[message.status]) root.append(el("p", "msg-note", STATUS[message.status]));
    }
    views.push(root);
  }
  if (!views.length) views.push(el("p", "share-empty", "This conversation has no messages."));
  list.replaceChildren(...views);
})();
