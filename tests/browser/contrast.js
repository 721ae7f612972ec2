// WCAG 2.x contrast of every visible piece of text against the background it is drawn on (for
// tests/browser/test_themes.py): the first opaque background among its ancestors, with the
// translucent ones blended over it. Text in disabled controls is exempt (WCAG 1.4.3), and so is
// text inside anything translucent (a faded, inactive element); large text (24 px, or 18.66 px
// bold) needs 3:1, other text 4.5:1. Returns one entry per text-bearing element.
() => {
  const parse = (value) => {
    const m = /rgba?\(([^)]+)\)/.exec(value || "");
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const lum = (c) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const canvas = parse(getComputedStyle(document.body).backgroundColor);
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let base = canvas && canvas.a >= 1 ? canvas : { r: 255, g: 255, b: 255, a: 1 };
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base);
    return base;
  };
  const hidden = (el) => {
    if (!el.checkVisibility({ opacityProperty: true, visibilityProperty: true })) return true;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) return true;  // visually-hidden text for screen readers
    for (let n = el; n; n = n.parentElement) {
      if (parseFloat(getComputedStyle(n).opacity) < 1) return true;
    }
    return false;
  };
  const CONTROLS = "select, input:not([type=hidden]):not([type=checkbox]):not([type=radio])" +
    ":not([type=file]):not([type=range])";
  const seen = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    const control = el.matches(CONTROLS) && (el.value || el.tagName === "SELECT");
    if (!own && !control) continue;
    if (el.closest("option, script, style, noscript, [aria-hidden=true]")) continue;
    if (el.closest(":disabled")) continue;
    if (hidden(el)) continue;
    const cs = getComputedStyle(el);
    const isSvg = el instanceof SVGElement;
    let fg = parse(isSvg ? cs.fill : cs.color);
    if (!fg) continue;
    const bg = background(el);
    if (fg.a < 1) fg = over(fg, bg);
    const size = parseFloat(cs.fontSize);
    const bold = parseInt(cs.fontWeight, 10) >= 700;
    const large = size >= 24 || (size >= 18.66 && bold);
    const value = ratio(fg, bg);
    const shown = control ? el.value || el.selectedOptions?.[0]?.text || "" : el.textContent;
    const classes = typeof el.className === "string" ? el.className.trim().split(/\s+/) : [];
    seen.push({
      text: shown.trim().slice(0, 40),
      tag: [el.tagName.toLowerCase(), ...classes.filter(Boolean)].join("."),
      ratio: Math.round(value * 100) / 100,
      required: large ? 3 : 4.5,
      fg: isSvg ? cs.fill : cs.color,
      bg: `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)})`,
    });
  }
  return seen;
}
