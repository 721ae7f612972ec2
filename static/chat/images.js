// Sent images as thumbnails in the history: a small picture from the upload's download URL
// (same origin, the session's cookie), which opens the full image in a viewer over the page.
// A file that is gone keeps the plain icon. Used by attachments.js for the chips of a message.
(function (global) {
  "use strict";

  let viewer = null;

  function ensureViewer() {
    if (viewer) return viewer;
    const dialog = document.createElement("dialog");
    dialog.className = "image-viewer";
    dialog.setAttribute("aria-label", "Image");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "image-viewer-close";
    close.textContent = "Close";
    const img = document.createElement("img");
    img.className = "image-viewer-img";
    const caption = document.createElement("p");
    caption.className = "image-viewer-caption";
    dialog.append(close, img, caption);
    close.addEventListener("click", () => dialog.close());
    // A click on the backdrop (outside the picture and its caption) closes it too.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.addEventListener("close", () => img.removeAttribute("src"));
    document.body.append(dialog);
    viewer = { dialog, img, caption, close };
    return viewer;
  }

  function open(src, name) {
    const v = ensureViewer();
    v.img.src = src;
    v.img.alt = name;
    v.caption.textContent = name;
    v.dialog.showModal();
    v.close.focus();
  }

  // A button holding the thumbnail; `fallback` (the icon) replaces the picture if it fails.
  function thumbnail(src, name, fallback) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "att-thumb att-preview";
    button.title = `Open ${name}`;
    button.setAttribute("aria-label", `Open the image ${name}`);
    const img = document.createElement("img");
    img.className = "att-preview-img";
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.src = src;
    img.addEventListener("error", () => {
      const icon = document.createElement("span");
      icon.className = "att-thumb";
      icon.append(fallback);
      button.replaceWith(icon);
    });
    button.append(img);
    button.addEventListener("click", () => open(src, name));
    return button;
  }

  global.ChatImages = { thumbnail, open };
})(window);
