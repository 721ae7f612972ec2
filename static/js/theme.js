// Light, dark or the system's theme, remembered per browser. Loaded in <head> without `defer`
// so that <html data-theme> is set before the first paint (no flash of the wrong palette).
// The key and the values ("auto", "light", "dark") are Django admin's own, so the admin's toggle
// and ours share one choice. The colours are the CSS variables of static/css/app.css.
(() => {
  const KEY = "theme";
  const MODES = ["auto", "light", "dark"];
  const root = document.documentElement;
  const systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  const stored = () => {
    try {
      const value = window.localStorage.getItem(KEY);
      return MODES.includes(value) ? value : "auto";
    } catch (_) {
      return "auto"; // storage blocked: follow the system
    }
  };
  const effective = (mode) => (mode === "auto" ? (systemDark && systemDark.matches ? "dark" : "light") : mode);

  // Stylesheets that exist in a light and a dark variant (the highlight.js themes on the chat
  // page) carry data-theme-variant and a media query for "auto"; a forced theme switches them.
  const syncVariants = (mode) => {
    document.querySelectorAll("link[data-theme-variant]").forEach((link) => {
      const variant = link.getAttribute("data-theme-variant");
      link.media = mode === "auto" ? `(prefers-color-scheme: ${variant})` : mode === variant ? "all" : "not all";
    });
  };

  const apply = (mode, announce) => {
    root.setAttribute("data-theme", mode);
    syncVariants(mode);
    document.querySelectorAll("select[data-theme-picker]").forEach((select) => {
      select.value = mode;
    });
    // Code that paints with colours read from CSS (the monitoring charts) redraws on this.
    if (announce) window.dispatchEvent(new CustomEvent("themechange", { detail: { mode, theme: effective(mode) } }));
  };

  const set = (mode) => {
    if (!MODES.includes(mode)) mode = "auto";
    try {
      window.localStorage.setItem(KEY, mode);
    } catch (_) {
      /* not remembered, still applied */
    }
    apply(mode, true);
  };

  apply(stored(), false);

  window.SiteTheme = { get: stored, set, effective: () => effective(stored()) };

  if (systemDark) {
    const onSystem = () => {
      if (stored() === "auto") apply("auto", true);
    };
    if (systemDark.addEventListener) systemDark.addEventListener("change", onSystem);
    else if (systemDark.addListener) systemDark.addListener(onSystem);
  }
  // Another tab (or the admin) changed the choice.
  window.addEventListener("storage", (event) => {
    if (event.key === KEY || event.key === null) apply(stored(), true);
  });

  const wire = () => {
    syncVariants(stored());
    document.querySelectorAll("select[data-theme-picker]").forEach((select) => {
      select.value = stored();
      select.addEventListener("change", () => set(select.value));
    });
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
