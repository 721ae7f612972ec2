// The sidebar's search in message text: GET /api/search/?kind=message (docs/api.md), debounced,
// its hits shown with their snippet. A snippet is plain text with the matches as code-point
// offsets: it is set as text nodes and <mark> elements, never parsed as HTML.
(function () {
  "use strict";

  const DEBOUNCE_MS = 300;
  const MIN_CHARS = 2;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // The snippet as nodes: text, and each [start, end) of `highlights` in a <mark>.
  function snippetNodes(snippet, highlights) {
    const points = Array.from(snippet || ""); // code points, as the offsets count
    const nodes = [];
    let at = 0;
    const spans = (highlights || [])
      .filter((span) => Array.isArray(span) && span.length === 2)
      .map(([start, end]) => [Math.max(0, start | 0), Math.min(points.length, end | 0)])
      .filter(([start, end]) => end > start)
      .sort((a, b) => a[0] - b[0]);
    for (const [start, end] of spans) {
      if (start < at) continue; // overlapping: keep the first
      if (start > at) nodes.push(document.createTextNode(points.slice(at, start).join("")));
      nodes.push(el("mark", "", points.slice(start, end).join("")));
      at = end;
    }
    if (at < points.length) nodes.push(document.createTextNode(points.slice(at).join("")));
    return nodes;
  }

  function formatWhen(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  }

  class SearchPanel {
    // options: input, section, list, note, more (elements); url (GET /api/search/); api (the
    // page's fetch helper); params() (extra query parameters, e.g. the source shown);
    // onOpen(conversationId, messageId) when a hit is chosen.
    constructor(options) {
      this.o = options;
      this.timer = null;
      this.request = 0;
      this.next = null;
      this.query = "";
      options.input.addEventListener("input", () => this.schedule());
      options.more.addEventListener("click", () => this.load(true));
    }

    schedule() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.load(false), DEBOUNCE_MS);
    }

    refresh() {
      clearTimeout(this.timer);
      this.load(false);
    }

    clear() {
      this.request += 1; // answers still on their way are dropped
      this.next = null;
      this.o.list.replaceChildren();
      this.o.section.hidden = true;
    }

    async load(more) {
      const query = this.o.input.value.trim();
      if (Array.from(query).length < MIN_CHARS) {
        this.clear();
        return;
      }
      if (more && !this.next) return;
      const request = ++this.request;
      let url = this.next;
      if (!more) {
        const params = new URLSearchParams({ q: query, kind: "message", page_size: "20" });
        const extra = this.o.params ? this.o.params() : {};
        for (const [name, value] of Object.entries(extra)) if (value) params.set(name, value);
        url = `${this.o.url}?${params}`;
      }
      this.o.section.hidden = false;
      this.o.section.setAttribute("aria-busy", "true");
      let data;
      try {
        data = await this.o.api(url);
      } catch (error) {
        if (request !== this.request || error.status === 401) return;
        this.o.section.removeAttribute("aria-busy");
        if (!more) this.o.list.replaceChildren();
        const code = error.data && error.data.code;
        this.o.note.textContent =
          code === "query_too_long"
            ? "That search is too long."
            : `Could not search the messages: ${error.message}`;
        this.o.note.classList.add("error");
        this.o.note.hidden = false;
        this.o.more.hidden = true;
        return;
      }
      if (request !== this.request) return; // a newer search answered first
      this.o.section.removeAttribute("aria-busy");
      this.query = query;
      this.next = data.next;
      const items = (data.results || []).map((hit) => this.item(hit));
      if (more) this.o.list.append(...items);
      else this.o.list.replaceChildren(...items);
      const none = this.o.list.children.length === 0;
      this.o.note.classList.remove("error");
      this.o.note.textContent = none ? "No message contains that." : "";
      this.o.note.hidden = !none;
      this.o.more.hidden = !this.next;
    }

    item(hit) {
      const item = el("li", "search-hit");
      item.dataset.conversation = hit.conversation.id;
      if (hit.message != null) item.dataset.message = String(hit.message);
      const link = el("a", "search-hit-link");
      const params = new URLSearchParams({ c: hit.conversation.id });
      if (hit.message != null) params.set("m", String(hit.message));
      link.href = `?${params}`;
      const who = { user: "You", assistant: "Reply" }[hit.role] || "";
      const head = el("span", "search-hit-head");
      head.append(
        el("span", "search-hit-title", hit.conversation.title || "Untitled conversation"),
        el("span", "search-hit-meta", [who, formatWhen(hit.created_at)].filter(Boolean).join(" · ")),
      );
      const snippet = el("span", "search-hit-snippet");
      snippet.append(...snippetNodes(hit.snippet, hit.highlights));
      link.append(head, snippet);
      link.addEventListener("click", (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
        event.preventDefault();
        this.o.onOpen(hit.conversation.id, hit.message);
      });
      item.append(link);
      return item;
    }
  }

  window.ChatSearch = { SearchPanel, snippetNodes };
})();
