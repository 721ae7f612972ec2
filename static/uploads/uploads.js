// The files page: drag-and-drop or pick files, upload them with a progress bar, list,
// download and delete them. Everything goes through the JSON API at /api/uploads/ with the
// session cookie and the CSRF token. Names from the server are only ever set as text
// (textContent), never as HTML: a file name is user input.
(function () {
  "use strict";

  const root = document.getElementById("uploads");
  if (!root) return;

  const apiUrl = root.dataset.apiUrl;
  const usageUrl = root.dataset.usageUrl;
  const maxBytes = Number(root.dataset.maxBytes);
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file-input");
  const transfers = document.getElementById("transfers");
  const tbody = document.querySelector("#files tbody");
  const empty = document.getElementById("empty");
  const listError = document.getElementById("list-error");
  const more = document.getElementById("more");
  const usage = document.getElementById("usage");
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  let nextPage = null;
  let queue = Promise.resolve();

  function humanSize(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children || []) node.append(child);
    return node;
  }

  function errorText(status, body, retryAfter) {
    if (status === 429) {
      return `Too many uploads: try again in ${retryAfter || "a few"} seconds.`;
    }
    if (body && typeof body.detail === "string") {
      return body.code ? `${body.detail} (${body.code})` : body.detail;
    }
    if (status === 0) return "The connection failed.";
    return `The server answered ${status}.`;
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  // -- the list ------------------------------------------------------------------------

  function row(upload) {
    const download = el("a", {
      href: upload.download_url,
      textContent: "Download",
      className: "download",
    });
    download.setAttribute("download", "");
    const remove = el("button", { type: "button", textContent: "Delete", className: "delete" });
    remove.addEventListener("click", () => deleteUpload(upload, tr, remove));
    const created = new Date(upload.created);
    const tr = el("tr", {}, [
      el("td", { className: "name", textContent: upload.original_name, title: upload.sha256 }),
      el("td", { className: "type", textContent: upload.content_type.split(";")[0] }),
      el("td", { className: "num", textContent: humanSize(upload.size) }),
      el("td", { className: "created" }, [el("time", { dateTime: upload.created, textContent: created.toLocaleString() })]),
      el("td", { className: "actions" }, [download, remove]),
    ]);
    tr.dataset.id = upload.id;
    return tr;
  }

  function updateEmpty() {
    empty.hidden = tbody.children.length > 0;
  }

  async function loadPage(url) {
    listError.hidden = true;
    try {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(errorText(response.status, body));
      for (const upload of body.results) {
        // Uploads made since the first page shift the pages: skip rows already shown.
        if (!tbody.querySelector(`tr[data-id="${CSS.escape(upload.id)}"]`)) tbody.append(row(upload));
      }
      nextPage = body.next;
      more.hidden = !nextPage;
    } catch (error) {
      listError.textContent = `Could not load your files: ${error.message}`;
      listError.hidden = false;
    }
    updateEmpty();
  }

  async function refreshUsage() {
    try {
      const response = await fetch(usageUrl, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const body = await response.json();
      usage.textContent =
        `You use ${humanSize(body.used_bytes)} of ${humanSize(body.quota_bytes)}` +
        ` (${body.files} file${body.files === 1 ? "" : "s"}).`;
    } catch (e) {
      usage.textContent = "";
    }
  }

  async function deleteUpload(upload, tr, button) {
    if (!window.confirm(`Delete ${upload.original_name}?`)) return;
    button.disabled = true;
    try {
      const response = await fetch(apiUrl + encodeURIComponent(upload.id) + "/", {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
      });
      if (response.status !== 204 && response.status !== 404) {
        const body = await response.json().catch(() => null);
        throw new Error(errorText(response.status, body));
      }
      tr.remove();
      updateEmpty();
      refreshUsage();
    } catch (error) {
      button.disabled = false;
      listError.textContent = `Could not delete ${upload.original_name}: ${error.message}`;
      listError.hidden = false;
    }
  }

  // -- uploading -----------------------------------------------------------------------

  function transferItem(file) {
    const progress = el("progress", { max: 100, value: 0 });
    progress.setAttribute("aria-label", `Upload progress of ${file.name}`);
    const status = el("span", { className: "status", textContent: "Waiting…" });
    const item = el("li", {}, [
      el("span", { className: "name", textContent: file.name, title: file.name }),
      progress,
      status,
    ]);
    transfers.prepend(item);
    return { item, progress, status };
  }

  function finish(view, ok, text) {
    view.item.classList.add(ok ? "done" : "failed");
    view.status.textContent = text;
    if (ok) view.progress.value = 100;
  }

  function send(file, view) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", apiUrl);
      xhr.setRequestHeader("X-CSRFToken", csrfToken);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          view.progress.value = Math.round((event.loaded / event.total) * 100);
          view.status.textContent = `${humanSize(event.loaded)} of ${humanSize(event.total)}`;
        }
      });
      xhr.addEventListener("load", () => {
        const body = parseJson(xhr.responseText);
        if (xhr.status === 201 && body) {
          finish(view, true, `Uploaded (${humanSize(body.size)}).`);
          tbody.prepend(row(body));
          updateEmpty();
          refreshUsage();
        } else {
          finish(view, false, errorText(xhr.status, body, xhr.getResponseHeader("Retry-After")));
        }
        resolve();
      });
      xhr.addEventListener("error", () => {
        finish(view, false, errorText(0));
        resolve();
      });
      xhr.addEventListener("abort", () => {
        finish(view, false, "Cancelled.");
        resolve();
      });
      const data = new FormData();
      data.append("file", file, file.name);
      view.status.textContent = "Uploading…";
      xhr.send(data);
    });
  }

  function uploadFiles(files) {
    for (const file of files) {
      const view = transferItem(file);
      if (file.size > maxBytes) {
        // The server refuses it too; this only saves sending it.
        finish(view, false, `Larger than the limit of ${humanSize(maxBytes)} (file_too_large).`);
        continue;
      }
      // One at a time: a burst of parallel uploads would only hit the rate limit sooner.
      queue = queue.then(() => send(file, view));
    }
  }

  input.addEventListener("change", () => {
    uploadFiles(Array.from(input.files));
    input.value = "";
  });

  form.addEventListener("submit", (event) => event.preventDefault());

  for (const type of ["dragenter", "dragover"]) {
    form.addEventListener(type, (event) => {
      event.preventDefault();
      form.classList.add("dragover");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    form.addEventListener(type, (event) => {
      event.preventDefault();
      if (type === "dragleave" && form.contains(event.relatedTarget)) return;
      form.classList.remove("dragover");
    });
  }
  form.addEventListener("drop", (event) => {
    if (event.dataTransfer && event.dataTransfer.files.length) {
      uploadFiles(Array.from(event.dataTransfer.files));
    }
  });
  // A file dropped next to the zone would otherwise replace the page with the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!form.contains(event.target)) event.preventDefault();
    });
  }

  more.addEventListener("click", () => {
    if (nextPage) loadPage(nextPage);
  });

  loadPage(apiUrl);
  refreshUsage();
})();
