// A small Markdown renderer for untrusted model text.
//
// It builds DOM nodes with document.createElement and sets text with textContent / text
// nodes only: nothing the model writes is ever parsed as HTML. Raw HTML in the text shows as
// literal text, links keep only http:, https: and mailto: addresses (and open in a new tab
// without a referrer), and images are never loaded (they become links).
//
// Supported: paragraphs (a single newline is a line break, as in chat), ATX headings,
// emphasis, strong, strikethrough, inline code, fenced code blocks with a language
// (highlighted by highlight.js when it is loaded, with a copy button), bullet and ordered
// lists (nested), block quotes, horizontal rules, tables, links and bare URLs.
//
// window.ChatMarkdown.createRenderer() returns {render(text) -> DocumentFragment}; the renderer
// keeps the highlighted DOM of finished code blocks so that re-rendering a reply on every
// streamed chunk does not highlight the same code again.
(function (global) {
  "use strict";

  const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
  const LINK_REL = "noopener noreferrer nofollow";
  const MAX_DEPTH = 16;
  // How far to look for the end of a link text or an emphasis: bounded, so that text full of
  // unmatched delimiters costs linear time, not quadratic (it is re-rendered while streaming).
  const MAX_SPAN = 1000;
  const PUNCTUATION = /[!-/:-@[-`{-~]/;
  const WORD_CHAR = /[\p{L}\p{N}]/u;

  const FENCE_RE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
  const HEADING_RE = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const HR_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE_RE = /^ {0,3}> ?(.*)$/;
  const LIST_RE = /^( {0,3}|[ \t]*)([-+*]|\d{1,9}[.)])(?:([ \t]+)(.*)|$)$/;
  const TABLE_SEP_RE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

  /** The href to use for a link target, or null when it is not an allowed absolute URL. */
  function safeHref(raw) {
    if (typeof raw !== "string") return null;
    let url;
    try {
      url = new URL(raw.trim());
    } catch (e) {
      return null; // relative or malformed: not a link
    }
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  }

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function isBlank(line) {
    return /^[ \t]*$/.test(line);
  }

  function indentOf(line) {
    let width = 0;
    for (const ch of line) {
      if (ch === " ") width += 1;
      else if (ch === "\t") width += 4 - (width % 4);
      else break;
    }
    return width;
  }

  /** Remove up to `width` columns of leading whitespace. */
  function dedent(line, width) {
    let col = 0;
    let i = 0;
    while (i < line.length && col < width) {
      if (line[i] === " ") col += 1;
      else if (line[i] === "\t") col += 4 - (col % 4);
      else break;
      i += 1;
    }
    return line.slice(i);
  }

  function listMarker(line) {
    if (HR_RE.test(line)) return null;
    const m = LIST_RE.exec(line);
    if (!m) return null;
    const ordered = /\d/.test(m[2]);
    const spaces = m[3] ? m[3].length : 0;
    return {
      indent: indentOf(m[1]),
      ordered,
      kind: ordered ? m[2].slice(-1) : m[2],
      start: ordered ? parseInt(m[2], 10) : 1,
      // Where the item's content starts: after the marker and one to four spaces.
      width: indentOf(m[1]) + m[2].length + (spaces === 0 || spaces > 4 ? 1 : spaces),
      text: m[4] !== undefined ? (spaces > 4 ? m[3].slice(1) + m[4] : m[4]) : "",
    };
  }

  function isTableStart(lines, i) {
    return (
      i + 1 < lines.length &&
      lines[i].includes("|") &&
      TABLE_SEP_RE.test(lines[i + 1]) &&
      lines[i + 1].includes("-") &&
      (lines[i + 1].includes("|") || lines[i].trim().startsWith("|"))
    );
  }

  function startsBlock(lines, i) {
    const line = lines[i];
    return (
      FENCE_RE.test(line) ||
      HEADING_RE.test(line) ||
      HR_RE.test(line) ||
      QUOTE_RE.test(line) ||
      listMarker(line) !== null ||
      isTableStart(lines, i)
    );
  }

  // ------------------------------------------------------------------ blocks

  function parseBlocks(lines, depth) {
    const blocks = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        i += 1;
        continue;
      }
      let m = FENCE_RE.exec(line);
      if (m) {
        const indent = m[1].length;
        const fence = m[2];
        const close = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
        const body = [];
        let closed = false;
        i += 1;
        while (i < lines.length) {
          if (close.test(lines[i])) {
            closed = true;
            i += 1;
            break;
          }
          body.push(dedent(lines[i], indent));
          i += 1;
        }
        if (!closed && body.length && body[body.length - 1] === "") body.pop(); // still streaming
        blocks.push({ type: "code", lang: m[3].toLowerCase(), text: body.join("\n"), closed });
        continue;
      }
      m = HEADING_RE.exec(line);
      if (m) {
        blocks.push({ type: "heading", level: m[1].length, text: (m[2] || "").trim() });
        i += 1;
        continue;
      }
      if (HR_RE.test(line)) {
        blocks.push({ type: "hr" });
        i += 1;
        continue;
      }
      if (QUOTE_RE.test(line) && depth < MAX_DEPTH) {
        const inner = [];
        while (i < lines.length && !isBlank(lines[i])) {
          const q = QUOTE_RE.exec(lines[i]);
          if (q) inner.push(q[1]);
          else if (startsBlock(lines, i)) break;
          else inner.push(lines[i]); // lazy continuation of the quoted paragraph
          i += 1;
        }
        blocks.push({ type: "quote", children: parseBlocks(inner, depth + 1) });
        continue;
      }
      const marker = listMarker(line);
      if (marker && depth < MAX_DEPTH) {
        const parsed = parseList(lines, i, marker, depth);
        blocks.push(parsed.block);
        i = parsed.next;
        continue;
      }
      if (isTableStart(lines, i)) {
        const parsed = parseTable(lines, i);
        blocks.push(parsed.block);
        i = parsed.next;
        continue;
      }
      const para = [line.replace(/^[ \t]+/, "")];
      i += 1;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines, i)) {
        para.push(lines[i].replace(/^[ \t]+/, ""));
        i += 1;
      }
      blocks.push({ type: "para", text: para.join("\n") });
    }
    return blocks;
  }

  function parseList(lines, i, first, depth) {
    const items = [];
    let tight = true;
    while (i < lines.length) {
      const marker = listMarker(lines[i]);
      if (
        !marker ||
        marker.ordered !== first.ordered ||
        marker.kind !== first.kind ||
        marker.indent >= first.width
      ) {
        break;
      }
      const itemLines = [marker.text];
      let sawBlank = false;
      i += 1;
      while (i < lines.length) {
        const line = lines[i];
        if (isBlank(line)) {
          let j = i;
          while (j < lines.length && isBlank(lines[j])) j += 1;
          if (j < lines.length && indentOf(lines[j]) >= marker.width) {
            for (let k = i; k < j; k += 1) itemLines.push("");
            sawBlank = true;
            i = j;
            continue;
          }
          break;
        }
        const indent = indentOf(line);
        if (indent >= marker.width) {
          itemLines.push(dedent(line, marker.width));
          i += 1;
          continue;
        }
        const nested = listMarker(line);
        if (nested && nested.indent > marker.indent) {
          // A sub-list indented less than the content column: still nested (lenient).
          itemLines.push(dedent(line, nested.indent));
          i += 1;
          continue;
        }
        if (nested || startsBlock(lines, i) || sawBlank) break;
        itemLines.push(line.trim()); // lazy paragraph continuation
        i += 1;
      }
      if (sawBlank) tight = false;
      items.push(parseBlocks(itemLines, depth + 1));
      if (i < lines.length && isBlank(lines[i])) {
        let j = i;
        while (j < lines.length && isBlank(lines[j])) j += 1;
        const next = j < lines.length ? listMarker(lines[j]) : null;
        if (
          next &&
          next.ordered === first.ordered &&
          next.kind === first.kind &&
          next.indent < first.width
        ) {
          tight = false;
          i = j;
          continue;
        }
        break;
      }
    }
    return {
      block: { type: "list", ordered: first.ordered, start: first.start, items, tight },
      next: i,
    };
  }

  function splitRow(line) {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    const cells = [];
    let cell = "";
    let inCode = false;
    for (let k = 0; k < s.length; k += 1) {
      const ch = s[k];
      if (ch === "\\" && s[k + 1] === "|") {
        cell += "|";
        k += 1;
        continue;
      }
      if (ch === "`") inCode = !inCode;
      if (ch === "|" && !inCode) {
        cells.push(cell.trim());
        cell = "";
        continue;
      }
      cell += ch;
    }
    cells.push(cell.trim());
    return cells;
  }

  function parseTable(lines, i) {
    const header = splitRow(lines[i]);
    const align = splitRow(lines[i + 1]).map((spec) => {
      const left = spec.startsWith(":");
      const right = spec.endsWith(":");
      if (left && right) return "center";
      if (right) return "right";
      if (left) return "left";
      return "";
    });
    const rows = [];
    i += 2;
    while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
      rows.push(splitRow(lines[i]));
      i += 1;
    }
    return { block: { type: "table", header, align, rows }, next: i };
  }

  // ------------------------------------------------------------------ inline

  function findCodeSpanEnd(src, i, run) {
    const fence = "`".repeat(run);
    let j = i + run;
    for (;;) {
      j = src.indexOf(fence, j);
      if (j < 0) return -1;
      let end = j;
      while (src[end] === "`") end += 1;
      if (end - j === run) return j;
      j = end;
    }
  }

  /** [text](destination "title") starting at src[i] === "[": {text, href, end} or null. */
  function parseLink(src, i) {
    let level = 0;
    let j = i;
    const limit = Math.min(src.length, i + MAX_SPAN);
    for (; j < limit; j += 1) {
      const ch = src[j];
      if (ch === "\\") {
        j += 1;
      } else if (ch === "`") {
        let run = 1;
        while (src[j + run] === "`") run += 1;
        const end = findCodeSpanEnd(src, j, run);
        j = end < 0 ? j + run - 1 : end + run - 1;
      } else if (ch === "[") {
        level += 1;
      } else if (ch === "]") {
        level -= 1;
        if (level === 0) break;
      }
    }
    if (level !== 0 || src[j + 1] !== "(") return null;
    const text = src.slice(i + 1, j);
    let k = j + 2;
    while (src[k] === " " || src[k] === "\t") k += 1;
    let href = "";
    if (src[k] === "<") {
      const close = src.indexOf(">", k);
      if (close < 0) return null;
      href = src.slice(k + 1, close);
      k = close + 1;
    } else {
      let parens = 0;
      const startK = k;
      const end = Math.min(src.length, k + 2048);
      for (; k < end; k += 1) {
        const ch = src[k];
        if (ch === "\\" && k + 1 < src.length) {
          k += 1;
        } else if (ch === "(") {
          parens += 1;
          if (parens > 32) return null; // CommonMark's limit too
        } else if (ch === ")") {
          if (parens === 0) break;
          parens -= 1;
        } else if (/\s/.test(ch)) {
          break;
        }
      }
      href = src.slice(startK, k).replace(/\\([!-/:-@[-`{-~])/g, "$1");
    }
    while (/\s/.test(src[k] || "")) k += 1;
    const quote = src[k];
    if (quote === '"' || quote === "'") {
      const close = src.indexOf(quote, k + 1);
      if (close < 0) return null;
      k = close + 1;
      while (/\s/.test(src[k] || "")) k += 1;
    }
    if (src[k] !== ")") return null;
    return { text, href, end: k + 1 };
  }

  function appendLink(parent, textSrc, href, depth) {
    const safe = safeHref(href);
    if (safe === null) {
      // Not an allowed address: keep the words, drop the link.
      const span = el("span", "md-unsafe-link");
      span.title = "Link removed: only http, https and mailto addresses are allowed";
      renderInline(textSrc, span, depth + 1, true);
      parent.append(span);
      return;
    }
    const a = el("a");
    a.href = safe;
    a.rel = LINK_REL;
    a.target = "_blank";
    if (textSrc) renderInline(textSrc, a, depth + 1, true);
    else a.textContent = safe;
    parent.append(a);
  }

  /** Emphasis, strong, strikethrough at src[i]: {node, end} or null.
   *
   * Whether a delimiter run closes does not depend on the opener, so a search that found no
   * closer up to some position need not be repeated by the next opener: `memo` remembers how
   * far each kind of delimiter is known to have no closer (text full of unmatched `_` or `*`
   * stays linear). */
  function parseEmphasis(src, i, depth, memo) {
    const ch = src[i];
    let run = 1;
    while (src[i + run] === ch) run += 1;
    let size;
    if (ch === "~") {
      if (run !== 2) return null;
      size = 2;
    } else {
      size = Math.min(run, 3);
      if (run > 3) return null;
    }
    const after = src[i + size];
    if (after === undefined || /\s/.test(after)) return null;
    if (ch === "_" && i > 0 && WORD_CHAR.test(src[i - 1])) return null;
    const key = ch + size;
    const limit = Math.min(src.length, i + MAX_SPAN);
    let j = Math.max(i + size, memo[key] || 0);
    while (j < limit) {
      const c = src[j];
      if (c === "\\") {
        j += 2;
        continue;
      }
      if (c === "`") {
        let r = 1;
        while (src[j + r] === "`") r += 1;
        const end = findCodeSpanEnd(src, j, r);
        j = end < 0 ? j + r : end + r;
        continue;
      }
      if (c === ch) {
        let r = 1;
        while (src[j + r] === ch) r += 1;
        const closes =
          r === size &&
          !/\s/.test(src[j - 1]) &&
          !(ch === "_" && j + r < src.length && WORD_CHAR.test(src[j + r]));
        if (closes) {
          const inner = src.slice(i + size, j);
          let node;
          let target;
          if (ch === "~") {
            node = target = el("del");
          } else if (size === 1) {
            node = target = el("em");
          } else if (size === 2) {
            node = target = el("strong");
          } else {
            node = el("strong");
            target = el("em");
            node.append(target);
          }
          renderInline(inner, target, depth + 1, false);
          return { node, end: j + r };
        }
        j += r;
        continue;
      }
      j += 1;
    }
    memo[key] = Math.max(memo[key] || 0, limit);
    return null;
  }

  const BARE_URL_RE = /^(?:https?:\/\/|mailto:)[^\s<>"]+/i;

  function trimUrl(url) {
    // Trailing punctuation belongs to the sentence; a closing parenthesis only if unbalanced.
    let end = url.length;
    for (;;) {
      const last = url[end - 1];
      if (/[.,;:!?'"*_~]/.test(last)) {
        end -= 1;
      } else if (last === ")") {
        const part = url.slice(0, end);
        const open = (part.match(/\(/g) || []).length;
        const close = (part.match(/\)/g) || []).length;
        if (close > open) end -= 1;
        else break;
      } else {
        break;
      }
    }
    return url.slice(0, end);
  }

  function renderInline(src, parent, depth, inLink) {
    if (depth > MAX_DEPTH) {
      parent.append(document.createTextNode(src));
      return;
    }
    let buffer = "";
    const memo = {};
    const flush = () => {
      if (buffer) {
        parent.append(document.createTextNode(buffer));
        buffer = "";
      }
    };
    let i = 0;
    while (i < src.length) {
      const ch = src[i];
      if (ch === "\\") {
        const next = src[i + 1];
        if (next === "\n") {
          flush();
          parent.append(el("br"));
          i += 2;
          continue;
        }
        if (next !== undefined && PUNCTUATION.test(next)) {
          buffer += next;
          i += 2;
          continue;
        }
        buffer += ch;
        i += 1;
        continue;
      }
      if (ch === "\n") {
        buffer = buffer.replace(/[ \t]+$/, "");
        flush();
        parent.append(el("br"));
        i += 1;
        continue;
      }
      if (ch === "`") {
        let run = 1;
        while (src[i + run] === "`") run += 1;
        const end = findCodeSpanEnd(src, i, run);
        if (end >= 0) {
          flush();
          let code = src.slice(i + run, end).replace(/\n/g, " ");
          if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) {
            code = code.slice(1, -1);
          }
          const node = el("code");
          node.textContent = code;
          parent.append(node);
          i = end + run;
          continue;
        }
        buffer += src.slice(i, i + run);
        i += run;
        continue;
      }
      if (ch === "!" && src[i + 1] === "[" && !inLink) {
        const link = parseLink(src, i + 1);
        if (link) {
          // Images are not loaded (no tracking pixels, no data exfiltration): a link instead.
          flush();
          appendLink(parent, `Image: ${link.text || "untitled"}`, link.href, depth);
          i = link.end;
          continue;
        }
      }
      if (ch === "[" && !inLink) {
        const link = parseLink(src, i);
        if (link) {
          flush();
          appendLink(parent, link.text, link.href, depth);
          i = link.end;
          continue;
        }
      }
      if (ch === "<" && !inLink) {
        const m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(src.slice(i, i + 2048));
        if (m) {
          flush();
          appendLink(parent, "", m[1], depth);
          i += m[0].length;
          continue;
        }
      }
      if ((ch === "h" || ch === "H" || ch === "m" || ch === "M") && !inLink) {
        const prev = i > 0 ? src[i - 1] : "";
        if (!WORD_CHAR.test(prev)) {
          const m = BARE_URL_RE.exec(src.slice(i, i + 2048));
          if (m) {
            const url = trimUrl(m[0]);
            if (safeHref(url) && url.length > 8) {
              flush();
              appendLink(parent, "", url, depth);
              i += url.length;
              continue;
            }
          }
        }
      }
      if (ch === "*" || ch === "_" || ch === "~") {
        const emphasis = parseEmphasis(src, i, depth, memo);
        if (emphasis) {
          flush();
          parent.append(emphasis.node);
          i = emphasis.end;
          continue;
        }
        let run = 1;
        while (src[i + run] === ch) run += 1;
        buffer += src.slice(i, i + run);
        i += run;
        continue;
      }
      buffer += ch;
      i += 1;
    }
    flush();
  }

  // ------------------------------------------------------------------ rendering

  function codeBlock(block, cache, used) {
    const key = `${block.lang}\u0000${block.text}`;
    if (block.closed && cache.has(key) && !used.has(key)) {
      const node = cache.get(key);
      used.set(key, node);
      return node;
    }
    const wrapper = el("div", "code-block");
    const head = el("div", "code-head");
    const label = el("span", "code-lang");
    label.textContent = block.lang || "text";
    const copy = el("button", "copy-btn");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy the code");
    head.append(label, copy);
    const pre = el("pre");
    const code = el("code");
    code.textContent = block.text;
    pre.append(code);
    wrapper.append(head, pre);
    const hljs = global.hljs;
    if (hljs && block.text) {
      // highlight.js escapes the text itself; it never sees anything but textContent.
      if (block.lang && hljs.getLanguage(block.lang)) {
        code.className = `language-${block.lang}`;
        hljs.highlightElement(code);
      } else if (!block.lang && block.closed && block.text.length < 20000) {
        hljs.highlightElement(code); // auto-detect, once the block is complete
        code.classList.remove("language-undefined");
      } else {
        code.classList.add("hljs");
      }
    }
    if (block.closed) used.set(key, wrapper);
    return wrapper;
  }

  function renderBlocks(blocks, parent, ctx, tight) {
    for (const block of blocks) {
      switch (block.type) {
        case "para": {
          if (tight) {
            renderInline(block.text, parent, 0, false);
          } else {
            const p = el("p");
            renderInline(block.text, p, 0, false);
            parent.append(p);
          }
          break;
        }
        case "heading": {
          const h = el(`h${block.level}`);
          renderInline(block.text, h, 0, false);
          parent.append(h);
          break;
        }
        case "hr":
          parent.append(el("hr"));
          break;
        case "code":
          parent.append(codeBlock(block, ctx.cache, ctx.used));
          break;
        case "quote": {
          const q = el("blockquote");
          renderBlocks(block.children, q, ctx, false);
          parent.append(q);
          break;
        }
        case "list": {
          const list = el(block.ordered ? "ol" : "ul");
          if (block.ordered && block.start !== 1) list.start = block.start;
          for (const item of block.items) {
            const li = el("li");
            renderBlocks(item, li, ctx, block.tight);
            list.append(li);
          }
          parent.append(list);
          break;
        }
        case "table": {
          const wrap = el("div", "table-wrap");
          const table = el("table");
          const thead = el("thead");
          const headRow = el("tr");
          block.header.forEach((cell, index) => {
            const th = el("th");
            if (block.align[index]) th.className = `align-${block.align[index]}`;
            renderInline(cell, th, 0, false);
            headRow.append(th);
          });
          thead.append(headRow);
          const tbody = el("tbody");
          for (const row of block.rows) {
            const tr = el("tr");
            block.header.forEach((_, index) => {
              const td = el("td");
              if (block.align[index]) td.className = `align-${block.align[index]}`;
              renderInline(row[index] || "", td, 0, false);
              tr.append(td);
            });
            tbody.append(tr);
          }
          table.append(thead, tbody);
          wrap.append(table);
          parent.append(wrap);
          break;
        }
        default:
          break;
      }
    }
  }

  function createRenderer() {
    let cache = new Map();
    return {
      render(text) {
        const lines = String(text || "")
          .replace(/\r\n?/g, "\n")
          .split("\n");
        const fragment = document.createDocumentFragment();
        const ctx = { cache, used: new Map() };
        renderBlocks(parseBlocks(lines, 0), fragment, ctx, false);
        cache = ctx.used; // keep only the code blocks still in the text
        return fragment;
      },
    };
  }

  global.ChatMarkdown = { createRenderer, safeHref, parseBlocks };
})(window);
