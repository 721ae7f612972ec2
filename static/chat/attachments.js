// Files attached to the next chat message, and the files shown on saved messages.
//
// A file picked, dropped on the chat or pasted into the message box is uploaded at once
// (POST /api/uploads/, one at a time, with a progress bar) and shown as a removable chip; a
// file uploaded before can be picked from a menu (GET /api/uploads/). The chat sends the ids
// of the ready ones with `chat.send` (`attachments`) and removes their chips once the server
// accepted the message. A refused upload stays as a chip with the server's reason and is
// never sent.
//
// File names are user input: they are only ever set as text (textContent). Image thumbnails
// are decoded from the local File (createImageBitmap) and drawn on a canvas: no URL is made,
// so a strict `img-src 'self'` policy needs no exception, and the server's bytes are never
// shown inline.
(function (global) {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    text: [
      "M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z",
      "M14 2v6h6",
      "M16 13H8",
      "M16 17H8",
    ],
    pdf: ["M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z", "M14 2v6h6", "M8 15h8"],
    image: [
      "M5 3h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z",
      "M8.5 7a1.5 1.5 0 1 0 0 3a1.5 1.5 0 1 0 0-3z",
      "M21 15l-5-5L5 21",
    ],
  };
  const THUMB_PX = 64; // drawn at twice the displayed size, for sharp high-DPI screens
  const THUMB_MAX_BYTES = 25 * 1024 * 1024;
  const HINT_MS = 5000;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function icon(kind) {
    const svg = document.createElementNS(SVG_NS, "svg");
    for (const [name, value] of [
      ["viewBox", "0 0 24 24"],
      ["width", "16"],
      ["height", "16"],
      ["aria-hidden", "true"],
      ["fill", "none"],
      ["stroke", "currentColor"],
      ["stroke-width", "2"],
      ["stroke-linecap", "round"],
      ["stroke-linejoin", "round"],
    ]) {
      svg.setAttribute(name, value);
    }
    for (const d of ICONS[kind] || ICONS.text) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }

  function humanSize(bytes) {
    if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "";
    const units = ["bytes", "KB", "MB", "GB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    if (unit === 0) return `${value} byte${value === 1 ? "" : "s"}`;
    return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
  }

  function guessKind(record) {
    if (record.kind === "image" || record.kind === "pdf" || record.kind === "text") {
      return record.kind;
    }
    const type = String(record.content_type || record.type || "");
    if (type.startsWith("image/")) return "image";
    if (type === "application/pdf") return "pdf";
    return "text";
  }

  function downloadUrl(uploadsUrl, id) {
    return `${uploadsUrl}${encodeURIComponent(id)}/download/`;
  }

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  // What a refused upload shows: the server's own words, with what to do for the limits.
  function uploadErrorText(status, body, retryAfter) {
    const detail = body && typeof body.detail === "string" ? body.detail.trim() : "";
    const code = body && typeof body.code === "string" ? body.code : "";
    if (status === 0) return "The upload failed: the server could not be reached.";
    if (status === 429 || code === "throttled") {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : "";
      return `Too many uploads right now: ${detail || "wait a moment."}${wait}`;
    }
    if (detail) return detail;
    return `The server answered ${status}.`;
  }

  // ------------------------------------------------------------------ saved messages

  // The chips of a user message's attachments ({id, name, content_type, size, kind,
  // truncated?}), each linking to its download (which may be gone: the name stays).
  function messageChips(attachments, uploadsUrl) {
    if (!Array.isArray(attachments)) return null;
    const records = attachments.filter((a) => a && typeof a === "object");
    if (!records.length) return null;
    const list = el("ul", "msg-attachments");
    list.setAttribute("aria-label", "Attached files");
    for (const record of records) {
      const name = typeof record.name === "string" && record.name ? record.name : "file";
      const kind = guessKind(record);
      const chip = el("li", "att-chip sent");
      chip.dataset.kind = kind;
      let thumb = el("span", "att-thumb");
      thumb.append(icon(kind));
      const text = el("span", "att-text");
      let label;
      if (kind === "image" && typeof record.id === "string" && record.id && global.ChatImages) {
        // images.js: a thumbnail that opens the full image; the icon if the file is gone.
        thumb = global.ChatImages.thumbnail(downloadUrl(uploadsUrl, record.id), name, icon(kind));
      }
      if (typeof record.id === "string" && record.id) {
        label = el("a", "att-name", name);
        label.href = downloadUrl(uploadsUrl, record.id);
        label.setAttribute("download", "");
        label.title = `Download ${name}`;
        chip.dataset.id = record.id;
      } else {
        label = el("span", "att-name", name);
        label.title = name;
      }
      const meta = el("span", "att-meta", humanSize(record.size));
      if (record.truncated) {
        const note = el("span", "att-note", "truncated");
        note.title = "The text of this file was too long: only its beginning went to the model.";
        if (meta.textContent) meta.append(" · ");
        meta.append(note);
      }
      text.append(label);
      if (meta.textContent) text.append(meta);
      chip.append(thumb, text);
      list.append(chip);
    }
    return list;
  }

  // ------------------------------------------------------------------ the next message's files

  class AttachmentTray {
    // options: tray, list, hint, input, attachButton, menuButton, menu, dropZone, overlay,
    // pasteTarget (elements); uploadsUrl, filesUrl, maxBytes, maxCount, accept;
    // csrfToken() ; onChange() (the composer updates) ; onExpired() (a 401).
    constructor(options) {
      this.o = options;
      this.items = [];
      this.queue = [];
      this.active = null;
      this.nextKey = 1;
      this.hintText = "";
      this.hintTimer = 0;
      this.disabled = false;
      this.menuRequest = 0;
      if (options.accept) options.input.accept = options.accept;
      this.wirePicker();
      this.wireDrop();
      this.wirePaste();
      this.wireMenu();
    }

    // -------------------------------------------------------------- state, for the composer

    get uploading() {
      return this.items.some((item) => item.status === "queued" || item.status === "uploading");
    }

    get hasReady() {
      return this.items.some((item) => item.status === "ready");
    }

    // What `chat.send` carries and the sent message shows.
    readyRecords() {
      return this.items
        .filter((item) => item.status === "ready")
        .map((item) => ({
          id: item.id,
          name: item.name,
          size: item.size,
          kind: item.kind,
          content_type: item.contentType,
        }));
    }

    // The server accepted the message: its files leave the tray, and so do the refused
    // files shown before it. Files still uploading (added since) stay for the next one.
    removeSent(ids) {
      const sent = new Set(ids);
      for (const item of this.items.slice()) {
        if ((item.status === "ready" && sent.has(item.id)) || item.status === "failed") {
          this.drop(item);
        }
      }
      this.changed();
    }

    // A send refused because of one of the files (deleted, missing on disk, unreadable):
    // mark it, so that the next send goes without it.
    markRefused(code, detail, text) {
      const message = String(detail || "");
      let marked = false;
      for (const item of this.items) {
        if (item.status !== "ready") continue;
        const hit =
          code === "attachment_not_found"
            ? message.includes(item.id)
            : message.startsWith(`${item.name}:`) || message.includes(`of ${item.name} is`);
        if (hit) {
          item.status = "failed";
          item.error = text;
          item.retryable = false;
          this.render(item);
          marked = true;
        }
      }
      if (marked) this.changed();
      return marked;
    }

    setDisabled(disabled) {
      this.disabled = disabled;
      this.o.attachButton.disabled = disabled;
      this.o.menuButton.disabled = disabled;
      if (disabled) this.closeMenu(false);
    }

    flashHint(text) {
      clearTimeout(this.hintTimer);
      this.hintText = text;
      this.hintTimer = setTimeout(() => {
        this.hintText = "";
        this.changed();
      }, HINT_MS);
      this.changed();
    }

    changed() {
      const { tray, hint } = this.o;
      let text = this.hintText;
      if (!text && this.uploading) text = "Uploading… the message can be sent once the files are ready.";
      hint.textContent = text;
      hint.hidden = !text;
      tray.hidden = this.items.length === 0 && !text;
      if (this.o.onChange) this.o.onChange();
    }

    // -------------------------------------------------------------- adding files

    countAttached() {
      return this.items.filter((item) => item.status !== "failed").length;
    }

    newItem(fields) {
      const item = {
        key: this.nextKey++,
        file: null,
        name: "file",
        size: null,
        status: "queued",
        id: null,
        kind: null,
        contentType: "",
        error: "",
        retryable: false,
        xhr: null,
        chip: null,
        progress: null,
        percent: null,
        thumb: null,
        ...fields,
      };
      this.items.push(item);
      return item;
    }

    addFiles(fileList) {
      if (this.disabled) return;
      const files = Array.from(fileList || []);
      for (const file of files) {
        const full = this.countAttached() >= this.o.maxCount;
        const item = this.newItem({
          file,
          name: file.name || "file",
          size: file.size,
          kind: guessKind(file),
        });
        if (full) {
          this.fail(item, `Not attached: at most ${this.o.maxCount} files go with one message.`);
        } else if (file.size > this.o.maxBytes) {
          // The server refuses it too; this only saves sending it.
          this.fail(item, `Not uploaded: larger than the limit of ${humanSize(this.o.maxBytes)}.`);
        } else {
          this.queue.push(item);
          this.render(item);
        }
        this.makeThumb(item);
      }
      this.pump();
      this.changed();
    }

    // A file uploaded before, picked from the menu (an upload as GET /api/uploads/ lists it).
    addExisting(upload) {
      if (this.disabled || !upload || typeof upload.id !== "string") return;
      if (this.items.some((item) => item.id === upload.id && item.status === "ready")) {
        this.flashHint(`${upload.original_name} is already attached.`);
        return;
      }
      if (this.countAttached() >= this.o.maxCount) {
        this.flashHint(`At most ${this.o.maxCount} files go with one message.`);
        return;
      }
      const item = this.newItem({
        status: "ready",
        id: upload.id,
        name: upload.original_name || "file",
        size: upload.size,
        kind: guessKind(upload),
        contentType: upload.content_type || "",
      });
      this.render(item);
      this.changed();
    }

    fail(item, text, retryable) {
      item.status = "failed";
      item.error = text;
      item.retryable = Boolean(retryable && item.file);
      this.render(item);
    }

    retry(item) {
      if (item.status !== "failed" || !item.file) return;
      if (this.countAttached() >= this.o.maxCount) {
        this.flashHint(`At most ${this.o.maxCount} files go with one message.`);
        return;
      }
      item.status = "queued";
      item.error = "";
      this.queue.push(item);
      this.render(item);
      this.pump();
      this.changed();
    }

    remove(item) {
      const index = this.items.indexOf(item);
      this.drop(item);
      this.changed();
      // Keep the keyboard where it was: the next chip's button, or the message box.
      const next = this.items[Math.min(index, this.items.length - 1)];
      const button = next && next.chip && next.chip.querySelector(".att-remove");
      (button || this.o.pasteTarget).focus();
    }

    drop(item) {
      if (item.xhr) item.xhr.abort(); // an upload under way stops
      this.queue = this.queue.filter((queued) => queued !== item);
      this.items = this.items.filter((other) => other !== item);
      if (item.chip) item.chip.remove();
    }

    // -------------------------------------------------------------- uploading

    pump() {
      if (this.active) return;
      const item = this.queue.shift();
      if (!item) return;
      this.active = item;
      // One at a time: a burst of parallel uploads would only hit the rate limit sooner.
      this.upload(item).then(() => {
        this.active = null;
        this.pump();
        this.changed();
      });
    }

    upload(item) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        item.xhr = xhr;
        item.status = "uploading";
        this.render(item);
        this.changed();
        xhr.open("POST", this.o.uploadsUrl);
        xhr.setRequestHeader("X-CSRFToken", this.o.csrfToken());
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.addEventListener("progress", (event) => {
          if (event.lengthComputable && item.progress) {
            const percent = Math.round((event.loaded / event.total) * 100);
            item.progress.value = percent;
            item.percent.textContent = `${percent}%`;
          }
        });
        xhr.addEventListener("load", () => {
          item.xhr = null;
          const body = parseJson(xhr.responseText);
          if (xhr.status === 201 && body && typeof body.id === "string") {
            item.status = "ready";
            item.id = body.id;
            item.name = typeof body.original_name === "string" ? body.original_name : item.name;
            item.size = typeof body.size === "number" ? body.size : item.size;
            item.kind = guessKind(body);
            item.contentType = body.content_type || "";
            this.render(item);
          } else if (xhr.status === 401) {
            this.fail(item, "Not uploaded: your session expired.", false);
            if (this.o.onExpired) this.o.onExpired();
          } else {
            const retryable = xhr.status === 429 || xhr.status >= 500;
            const why = uploadErrorText(xhr.status, body, xhr.getResponseHeader("Retry-After"));
            this.fail(item, `Not attached: ${why}`, retryable);
          }
          resolve();
        });
        xhr.addEventListener("error", () => {
          item.xhr = null;
          this.fail(item, uploadErrorText(0), true);
          resolve();
        });
        xhr.addEventListener("abort", () => {
          item.xhr = null; // removed by the user: its chip is gone already
          resolve();
        });
        const data = new FormData();
        data.append("file", item.file, item.name);
        xhr.send(data);
      });
    }

    // -------------------------------------------------------------- chips

    makeThumb(item) {
      const file = item.file;
      if (
        !file ||
        !/^image\/(png|jpeg|gif|webp)$/.test(file.type) ||
        file.size > THUMB_MAX_BYTES ||
        typeof global.createImageBitmap !== "function"
      ) {
        return;
      }
      global
        .createImageBitmap(file)
        .then((bitmap) => {
          const canvas = el("canvas", "att-thumb-img");
          canvas.width = THUMB_PX;
          canvas.height = THUMB_PX;
          canvas.setAttribute("aria-hidden", "true");
          const side = Math.min(bitmap.width, bitmap.height);
          const context = canvas.getContext("2d");
          if (context && side > 0) {
            context.drawImage(
              bitmap,
              (bitmap.width - side) / 2,
              (bitmap.height - side) / 2,
              side,
              side,
              0,
              0,
              THUMB_PX,
              THUMB_PX
            );
          }
          bitmap.close();
          item.thumb = canvas;
          if (item.chip && item.chip.isConnected) this.render(item);
        })
        .catch(() => {
          // Not a decodable image (the server will say what it is): the icon stays.
        });
    }

    render(item) {
      const chip = item.chip || el("li", "att-chip");
      item.chip = chip;
      chip.dataset.state = item.status;
      chip.dataset.kind = item.kind || "text";
      if (item.id) chip.dataset.id = item.id;
      else delete chip.dataset.id;

      const thumb = el("span", "att-thumb");
      thumb.append(item.thumb && item.status !== "failed" ? item.thumb : icon(item.kind));

      const text = el("span", "att-text");
      const name = el("span", "att-name", item.name);
      name.title = item.name;
      text.append(name);
      item.progress = null;
      if (item.status === "queued") {
        text.append(el("span", "att-meta", "Waiting to upload…"));
      } else if (item.status === "uploading") {
        const progress = el("progress", "att-progress");
        progress.max = 100;
        progress.value = 0;
        progress.setAttribute("aria-label", `Uploading ${item.name}`);
        const percent = el("span", "att-percent", "0%");
        percent.setAttribute("aria-hidden", "true");
        item.progress = progress;
        item.percent = percent;
        const meta = el("span", "att-meta att-uploading");
        meta.append(progress, percent);
        text.append(meta);
      } else if (item.status === "ready") {
        text.append(el("span", "att-meta", humanSize(item.size)));
      } else {
        const error = el("span", "att-error", item.error);
        error.setAttribute("role", "alert");
        error.title = item.error;
        text.append(error);
      }

      const parts = [thumb, text];
      if (item.status === "failed" && item.retryable) {
        const retry = el("button", "att-retry", "Retry");
        retry.type = "button";
        retry.setAttribute("aria-label", `Upload ${item.name} again`);
        retry.addEventListener("click", () => this.retry(item));
        parts.push(retry);
      }
      const remove = el("button", "att-remove", "×");
      remove.type = "button";
      const busy = item.status === "queued" || item.status === "uploading";
      const label = busy
        ? `Cancel the upload of ${item.name}`
        : item.status === "failed"
          ? `Dismiss ${item.name}`
          : `Remove ${item.name}`;
      remove.setAttribute("aria-label", label);
      remove.title = busy ? "Cancel the upload" : item.status === "failed" ? "Dismiss" : "Remove";
      remove.addEventListener("click", () => this.remove(item));
      parts.push(remove);
      chip.replaceChildren(...parts);
      if (!chip.isConnected) this.o.list.append(chip);
    }

    // -------------------------------------------------------------- picker, drop, paste

    wirePicker() {
      const { input, attachButton } = this.o;
      attachButton.addEventListener("click", () => {
        if (!this.disabled) input.click();
      });
      input.addEventListener("change", () => {
        this.addFiles(input.files);
        input.value = ""; // the same file can be picked again
      });
    }

    wireDrop() {
      const { dropZone, overlay } = this.o;
      const carriesFiles = (event) =>
        Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes("Files");
      const show = (on) => {
        overlay.hidden = !on;
        dropZone.classList.toggle("dragging", on);
      };
      for (const type of ["dragenter", "dragover"]) {
        dropZone.addEventListener(type, (event) => {
          if (!carriesFiles(event)) return; // dragged text goes into the box as usual
          event.preventDefault();
          event.dataTransfer.dropEffect = this.disabled ? "none" : "copy";
          if (!this.disabled) show(true);
        });
      }
      dropZone.addEventListener("dragleave", (event) => {
        if (event.relatedTarget && dropZone.contains(event.relatedTarget)) return;
        show(false);
      });
      dropZone.addEventListener("drop", (event) => {
        show(false);
        if (!carriesFiles(event)) return;
        event.preventDefault();
        this.addFiles(event.dataTransfer.files);
      });
      // A file dropped anywhere else would replace the page with the file.
      for (const type of ["dragover", "drop"]) {
        global.addEventListener(type, (event) => {
          if (carriesFiles(event) && !dropZone.contains(event.target)) event.preventDefault();
        });
      }
      global.addEventListener("dragend", () => show(false));
    }

    wirePaste() {
      this.o.pasteTarget.addEventListener("paste", (event) => {
        const data = event.clipboardData;
        if (!data || !data.files || !data.files.length) return;
        // Copied text that also comes as a picture (office documents) pastes as text.
        if (Array.from(data.types || []).includes("text/plain")) return;
        event.preventDefault();
        this.addFiles(data.files);
      });
    }

    // -------------------------------------------------------------- files uploaded before

    wireMenu() {
      const { menuButton, menu } = this.o;
      menuButton.addEventListener("click", () => {
        if (menu.hidden) this.openMenu();
        else this.closeMenu(false);
      });
      document.addEventListener("click", (event) => {
        if (menu.hidden) return;
        if (menu.contains(event.target) || menuButton.contains(event.target)) return;
        this.closeMenu(false);
      });
      menu.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {
          event.preventDefault();
          event.stopPropagation();
          this.closeMenu(true);
          return;
        }
        if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
        const buttons = Array.from(menu.querySelectorAll("button:not(:disabled), a"));
        if (!buttons.length) return;
        event.preventDefault();
        const at = buttons.indexOf(document.activeElement);
        const step = event.key === "ArrowDown" ? 1 : -1;
        buttons[(at + step + buttons.length) % buttons.length].focus();
      });
    }

    closeMenu(focusButton) {
      const { menuButton, menu } = this.o;
      if (menu.hidden) return;
      this.menuRequest += 1;
      menu.hidden = true;
      menuButton.setAttribute("aria-expanded", "false");
      if (focusButton) menuButton.focus();
    }

    async openMenu() {
      const { menuButton, menu } = this.o;
      const request = ++this.menuRequest;
      menu.hidden = false;
      menuButton.setAttribute("aria-expanded", "true");
      menu.replaceChildren(el("p", "recent-note", "Loading your files…"));
      let body;
      try {
        const response = await fetch(this.o.uploadsUrl, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        body = await response.json().catch(() => null);
        if (response.status === 401) {
          this.closeMenu(false);
          if (this.o.onExpired) this.o.onExpired();
          return;
        }
        if (!response.ok) {
          throw new Error(
            body && typeof body.detail === "string" ? body.detail : `The server answered ${response.status}.`
          );
        }
      } catch (error) {
        if (request !== this.menuRequest) return;
        const message =
          error instanceof TypeError ? "the server could not be reached." : error.message;
        menu.replaceChildren(el("p", "recent-note error", `Could not list your files: ${message}`));
        return;
      }
      if (request !== this.menuRequest) return;
      this.renderMenu((body && body.results) || [], body && body.count);
    }

    renderMenu(uploads, count) {
      const { menu } = this.o;
      const parts = [el("p", "recent-title", "Your recent files")];
      if (!uploads.length) {
        parts.push(el("p", "recent-note", "No files yet: attach one from this device."));
      }
      const attached = new Set(
        this.items.filter((item) => item.status === "ready").map((item) => item.id)
      );
      const list = el("ul", "recent-list");
      for (const upload of uploads) {
        if (!upload || typeof upload.id !== "string") continue;
        const name = upload.original_name || "file";
        const button = el("button", "recent-item");
        button.type = "button";
        button.dataset.id = upload.id;
        const already = attached.has(upload.id);
        button.disabled = already;
        const thumb = el("span", "att-thumb");
        thumb.append(icon(guessKind(upload)));
        const text = el("span", "att-text");
        const label = el("span", "att-name", name);
        label.title = name;
        text.append(label, el("span", "att-meta", already ? "Attached" : humanSize(upload.size)));
        button.append(thumb, text);
        button.setAttribute("aria-label", already ? `${name} (attached)` : `Attach ${name}`);
        button.addEventListener("click", () => {
          this.addExisting(upload);
          this.closeMenu(false);
          this.o.pasteTarget.focus();
        });
        const li = el("li");
        li.append(button);
        list.append(li);
      }
      if (list.children.length) parts.push(list);
      const more = typeof count === "number" && count > uploads.length;
      const manage = el("a", "recent-manage", more ? `All ${count} files…` : "Manage your files");
      manage.href = this.o.filesUrl;
      manage.target = "_blank";
      manage.rel = "noopener";
      parts.push(manage);
      menu.replaceChildren(...parts);
      const first = menu.querySelector("button:not(:disabled)") || manage;
      first.focus();
    }
  }

  global.ChatAttachments = { AttachmentTray, messageChips, humanSize };
})(window);
