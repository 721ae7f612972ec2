// Export, import and share in the web chat (docs/api.md, "Export, import and share").
//
// - The chat header gets a conversation menu (⋯) for the open conversation (the one in the
//   page's ?c= address): export as Markdown or JSON, export everything, and "Share link…",
//   which makes a read-only link (shown and copied once: the server keeps only its hash),
//   lists the conversation's links and revokes them.
// - The sidebar gets "Import…": a file from this server, Open WebUI or ChatGPT; the result
//   ("Imported 3 conversations") or the server's reason is shown under it, and the list is
//   refreshed through the "chat:conversations-changed" event that app.js listens to.
// Everything from the server is set as text.
(function () {
  "use strict";

  const configNode = document.getElementById("chat-config");
  const head = document.querySelector(".chat-head");
  const sidebar = document.getElementById("sidebar");
  if (!configNode || !head || !sidebar) return;
  const urls = JSON.parse(configNode.textContent).urls;
  const base = urls.conversations; // /api/conversations/

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function call(url, options) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
    if (init.method && init.method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw new Error("The server could not be reached.");
    }
    let data = null;
    try {
      data = response.status === 204 ? null : await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : "";
      throw new Error(detail || `The server answered ${response.status}.`);
    }
    return data;
  }

  function currentId() {
    return new URL(window.location.href).searchParams.get("c");
  }

  function conversationUrl(id, tail) {
    return `${base}${encodeURIComponent(id)}/${tail}`;
  }

  // ------------------------------------------------------------------ the conversation menu

  const wrap = el("div", "transfer-menu-wrap");
  // An icon, as the header's other tools: on a phone the title keeps the room.
  const toggle = el("button", "btn icon conv-menu-toggle", "⋯");
  toggle.type = "button";
  toggle.id = "conv-menu-toggle";
  toggle.title = "Export, share, import";
  toggle.setAttribute("aria-label", "Conversation menu: export and share");
  toggle.setAttribute("aria-haspopup", "true");
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-controls", "conv-menu");
  const menu = el("div", "model-menu transfer-menu");
  menu.id = "conv-menu";
  menu.setAttribute("role", "group");
  menu.setAttribute("aria-label", "Conversation actions");
  menu.hidden = true;
  wrap.append(toggle, menu);
  const settingsToggle = document.getElementById("settings-toggle");
  if (settingsToggle) settingsToggle.before(wrap);
  else head.append(wrap);

  function menuLink(text, href, filename) {
    const link = el("a", "model-menu-item", text);
    link.href = href;
    link.setAttribute("download", filename || "");
    link.addEventListener("click", () => closeMenu(false));
    return link;
  }

  function menuButton(text, onClick, className) {
    const button = el("button", `model-menu-item ${className || ""}`, text);
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  function fillMenu() {
    const id = currentId();
    const items = [];
    if (id) {
      items.push(el("p", "model-menu-title", "This conversation"));
      items.push(menuLink("Export as Markdown", conversationUrl(id, "export/?format=md")));
      items.push(menuLink("Export as JSON", conversationUrl(id, "export/?format=json")));
      items.push(menuButton("Share link…", () => openShare(id, true), "share-open"));
      items.push(menuButton("Manage share links…", () => openShare(id, false), "share-manage"));
    } else {
      items.push(el("p", "model-menu-note", "Open a conversation to export or share it."));
    }
    items.push(el("p", "model-menu-title", "All conversations"));
    items.push(menuLink("Export all (JSON)", `${base}export/`, "conversations.json"));
    menu.replaceChildren(...items);
  }

  // Placed under its button but inside the screen, whatever the header's layout (on a phone
  // the button is far from the right edge, and a menu hung from it would run off the left).
  function placeMenu() {
    const box = toggle.getBoundingClientRect();
    const width = Math.min(352, window.innerWidth - 16);
    const left = Math.max(8, Math.min(box.right - width, window.innerWidth - width - 8));
    menu.style.position = "fixed";
    menu.style.top = `${Math.round(box.bottom + 4)}px`;
    menu.style.left = `${Math.round(left)}px`;
    menu.style.right = "auto";
    menu.style.width = `${width}px`;
  }

  function openMenu() {
    fillMenu();
    menu.hidden = false;
    placeMenu();
    toggle.setAttribute("aria-expanded", "true");
    const first = menu.querySelector("a, button");
    if (first) first.focus();
  }

  function closeMenu(refocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    if (refocus) toggle.focus();
  }

  toggle.addEventListener("click", () => (menu.hidden ? openMenu() : closeMenu(true)));
  document.addEventListener("click", (event) => {
    // The path as dispatched: a click that replaced the menu's content is still inside.
    if (!event.composedPath().includes(wrap)) closeMenu(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeMenu(true);
  });
  window.addEventListener("resize", () => {
    if (!menu.hidden) placeMenu();
  });

  // ------------------------------------------------------------------ share

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      return false;
    }
  }

  function formatWhen(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime())
      ? iso
      : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  // `create`: make a new link first (shown once, copied); else only list and revoke.
  async function openShare(id, create) {
    const panel = el("div", "share-panel");
    panel.id = "share-panel";
    const status = el("p", "model-menu-note share-status", create ? "Making a link…" : "Loading…");
    status.setAttribute("role", "status");
    const list = el("ul", "share-links");
    panel.append(el("p", "model-menu-title", create ? "Share link" : "Share links"), status);
    menu.replaceChildren(panel);
    if (!create) {
      panel.append(list);
      try {
        await showLinks(id, list, status);
        status.textContent = "A link shows the conversation as it was when the link was made.";
      } catch (error) {
        status.textContent = `Could not load the links: ${error.message}`;
        status.classList.add("error");
      }
      return;
    }
    try {
      const link = await call(conversationUrl(id, "share/"), { method: "POST" });
      const field = el("input", "share-url");
      field.id = "share-url";
      field.readOnly = true;
      field.value = link.url;
      field.setAttribute("aria-label", "The share link");
      const copyButton = menuButton("Copy link", async () => {
        field.select();
        copyButton.textContent = (await copy(link.url)) ? "Copied" : "Select and copy it";
      });
      const open = el("a", "model-menu-item", "Open it");
      open.href = link.url;
      open.target = "_blank";
      open.rel = "noopener noreferrer";
      status.textContent =
        "Anyone this server lets open it sees the conversation as it is now; later messages stay private. The link is shown only once.";
      panel.append(field, copyButton, open, list);
      field.focus();
      field.select();
      copy(link.url);
      await showLinks(id, list, status);
    } catch (error) {
      status.textContent = `Could not share: ${error.message}`;
      status.classList.add("error");
    }
  }

  async function showLinks(id, list, status) {
    const links = await call(conversationUrl(id, "share/"));
    const rows = links.map((link) => {
      const row = el("li", "share-link");
      row.dataset.id = String(link.id);
      row.append(el("span", "share-link-name", `${link.token_prefix}… · ${formatWhen(link.created_at)}`));
      const revoke = menuButton("Revoke", async () => {
        try {
          await call(`${conversationUrl(id, "share/")}?link=${encodeURIComponent(link.id)}`, { method: "DELETE" });
          row.remove();
          status.textContent = "Link revoked: it now answers “not found”.";
        } catch (error) {
          status.textContent = `Could not revoke: ${error.message}`;
        }
      }, "share-revoke");
      revoke.setAttribute("aria-label", `Revoke the link ${link.token_prefix}…`);
      row.append(revoke);
      return row;
    });
    list.replaceChildren(...rows);
    const heading = el("p", "model-menu-title", `Links of this conversation (${links.length})`);
    list.before(heading);
    if (!links.length) list.append(el("li", "share-link", "None: nothing of it is shared."));
  }

  // ------------------------------------------------------------------ import

  const box = el("div", "sidebar-transfer");
  const input = el("input", "visually-hidden");
  input.type = "file";
  input.id = "import-file";
  input.accept = ".json,application/json";
  input.tabIndex = -1;
  input.setAttribute("aria-hidden", "true");
  const importButton = el("button", "btn subtle", "Import…");
  importButton.type = "button";
  importButton.id = "import-button";
  importButton.title = "Import conversations: this server's JSON export, Open WebUI's or ChatGPT's conversations.json";
  const result = el("p", "sidebar-note import-result");
  result.id = "import-result";
  result.setAttribute("role", "status");
  result.hidden = true;
  box.append(importButton, input, result);
  sidebar.append(box);

  importButton.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    input.value = "";
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    importButton.disabled = true;
    result.hidden = false;
    result.classList.remove("error");
    result.textContent = `Importing ${file.name}…`;
    try {
      const data = await call(`${base}import/`, { method: "POST", body: form });
      const n = data.imported;
      result.textContent = `Imported ${n} conversation${n === 1 ? "" : "s"} (${data.messages} messages).`;
      document.dispatchEvent(new CustomEvent("chat:conversations-changed"));
    } catch (error) {
      result.textContent = `Could not import ${file.name}: ${error.message}`;
      result.classList.add("error");
    } finally {
      importButton.disabled = false;
    }
  });
})();
