// The site menu on narrow screens: the links fold behind one button instead of overflowing.
(() => {
  const header = document.querySelector(".topbar");
  const toggle = header && header.querySelector(".menu-toggle");
  if (!toggle) return;
  const setOpen = (open) => {
    header.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => setOpen(!header.classList.contains("open")));
  document.addEventListener("click", (event) => {
    if (!header.contains(event.target)) setOpen(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && header.classList.contains("open")) {
      setOpen(false);
      toggle.focus();
    }
  });
})();

// A page with a drawer of its own (the chat) offers a slot for the site menu: on a phone the
// site's top bar is hidden there (chat.css) and the menu's links move into the drawer, so that
// the page has one menu button, not two. On a wider screen they go back to the top bar.
(() => {
  const slot = document.querySelector("[data-site-nav-slot]");
  const nav = document.getElementById("site-nav");
  if (!slot || !nav || !window.matchMedia) return;
  const home = nav.parentNode;
  const narrow = window.matchMedia("(max-width: 760px)");
  const place = () => {
    if (narrow.matches) {
      if (nav.parentNode !== slot) slot.appendChild(nav);
    } else if (nav.parentNode !== home) {
      home.appendChild(nav);
      home.classList.remove("open");
    }
  };
  place();
  if (narrow.addEventListener) narrow.addEventListener("change", place);
  else if (narrow.addListener) narrow.addListener(place);
})();
