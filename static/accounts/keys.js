// The API keys page: create a key (shown once, with a copy button), list and revoke keys.
// Everything goes through /api/auth/keys/ with the session cookie and the CSRF token. Names
// from the server are only ever set as text (textContent), never as HTML.
(function () {
  "use strict";

  const root = document.getElementById("api-keys");
  if (!root) return;

  const apiUrl = root.dataset.apiUrl;
  const form = document.getElementById("key-form");
  const nameInput = document.getElementById("key-name");
  const scopeInput = document.getElementById("key-scope");
  const expiryInput = document.getElementById("key-expiry");
  const createButton = document.getElementById("create-key");
  const formError = document.getElementById("form-error");
  const newKey = document.getElementById("new-key");
  const newKeyValue = document.getElementById("new-key-value");
  const copyButton = document.getElementById("copy-key");
  const copyStatus = document.getElementById("copy-status");
  const hideButton = document.getElementById("hide-key");
  const tbody = document.querySelector("#keys tbody");
  const empty = document.getElementById("empty");
  const listError = document.getElementById("list-error");
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) node.append(child);
    return node;
  }

  function when(iso, fallback) {
    if (!iso) return document.createTextNode(fallback);
    return el("time", { dateTime: iso, textContent: new Date(iso).toLocaleString() });
  }

  function errorText(status, body) {
    if (body && typeof body.detail === "string") {
      return body.code ? `${body.detail} (${body.code})` : body.detail;
    }
    if (status === 0) return "The connection failed.";
    return `The server answered ${status}.`;
  }

  async function call(url, options) {
    let response;
    try {
      response = await fetch(url, {
        credentials: "same-origin",
        ...options,
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken, ...(options.headers || {}) },
      });
    } catch (e) {
      throw new Error(errorText(0, null));
    }
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorText(response.status, body));
    return body;
  }

  function labelled(label, child) {
    // The column's name travels with each cell, for the stacked layout of narrow screens.
    const td = el("td", {}, [child]);
    td.dataset.label = label;
    return td;
  }

  function row(key) {
    const revoke = el("button", { type: "button", textContent: "Revoke", className: "revoke" });
    revoke.setAttribute("aria-label", `Revoke the key ${key.name}`);
    const tr = el("tr", {}, [
      labelled("Name", el("span", { className: "name", textContent: key.name })),
      labelled("Key", el("code", { className: "prefix", textContent: `${key.prefix}_…` })),
      labelled("Scope", el("span", { className: `scope scope-${key.scope}`, textContent: key.scope })),
      labelled("Created", when(key.created, "")),
      labelled("Last used", when(key.last_used, "never")),
      labelled("Expires", key.expired ? el("span", { className: "expired", textContent: "expired" }) : when(key.expires, "never")),
      el("td", { className: "actions" }, [revoke]),
    ]);
    tr.dataset.id = String(key.id);
    revoke.addEventListener("click", () => revokeKey(key, tr, revoke));
    return tr;
  }

  function updateEmpty() {
    empty.hidden = tbody.children.length > 0;
  }

  async function load() {
    listError.hidden = true;
    try {
      const keys = await call(apiUrl, { method: "GET" });
      tbody.replaceChildren(...keys.map(row));
    } catch (error) {
      listError.textContent = `Could not load your keys: ${error.message}`;
      listError.hidden = false;
    }
    updateEmpty();
  }

  async function revokeKey(key, tr, button) {
    if (!window.confirm(`Revoke the key "${key.name}"? Whatever uses it stops working at once.`)) return;
    button.disabled = true;
    listError.hidden = true;
    try {
      await call(`${apiUrl}${encodeURIComponent(key.id)}/`, { method: "DELETE" });
      tr.remove();
      updateEmpty();
    } catch (error) {
      listError.textContent = `Could not revoke "${key.name}": ${error.message}`;
      listError.hidden = false;
      button.disabled = false;
    }
  }

  function showKey(value) {
    newKeyValue.textContent = value;
    copyStatus.textContent = "";
    newKey.hidden = false;
    copyButton.focus();
  }

  function hideKey() {
    newKeyValue.textContent = "";
    copyStatus.textContent = "";
    newKey.hidden = true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    const name = nameInput.value.trim();
    if (!name) {
      formError.textContent = "Give the key a name, to tell it from your others.";
      formError.hidden = false;
      nameInput.focus();
      return;
    }
    const payload = { name, scope: scopeInput.value };
    const days = Number(expiryInput.value);
    if (days > 0) payload.expires = new Date(Date.now() + days * 86400 * 1000).toISOString();
    createButton.disabled = true;
    try {
      const created = await call(apiUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      tbody.prepend(row(created));
      updateEmpty();
      form.reset();
      showKey(created.key);
    } catch (error) {
      formError.textContent = `Could not create the key: ${error.message}`;
      formError.hidden = false;
    } finally {
      createButton.disabled = false;
    }
  });

  copyButton.addEventListener("click", async () => {
    const value = newKeyValue.textContent;
    try {
      await navigator.clipboard.writeText(value);
      copyStatus.textContent = "Copied to the clipboard.";
    } catch (e) {
      // No clipboard access (an insecure origin, a refused permission): select it instead.
      const range = document.createRange();
      range.selectNodeContents(newKeyValue);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copyStatus.textContent = "Selected: press Ctrl+C (⌘C) to copy it.";
    }
  });

  hideButton.addEventListener("click", hideKey);

  load();
})();
