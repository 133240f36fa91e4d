// A "Copy" button on every code block of a README or changelog. A file, not an inline
// script: the Content-Security-Policy forbids inline scripts.
(function () {
  "use strict";

  function copyWithSelection(text) {
    // Fallback for pages served over plain HTTP, where navigator.clipboard does not exist.
    var scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "copy-scratch";
    document.body.appendChild(scratch);
    scratch.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    document.body.removeChild(scratch);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return copyWithSelection(text); });
    }
    return copyWithSelection(text);
  }

  function announce(button, label) {
    button.textContent = label;
    window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
  }

  function addButton(pre) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-live", "polite");
    button.addEventListener("click", function () {
      copyText(pre.innerText).then(
        function () { announce(button, "Copied"); },
        function () {
          // Copying was refused: select the code so that Ctrl+C (or the menu) copies it.
          window.getSelection().selectAllChildren(pre);
          announce(button, "Selected: press Ctrl+C");
        }
      );
    });
    var holder = document.createElement("div");
    holder.className = "code-block";
    pre.parentNode.insertBefore(holder, pre);
    holder.appendChild(button);
    holder.appendChild(pre);
    if (!pre.hasAttribute("tabindex")) {
      pre.setAttribute("tabindex", "0");
    }
  }

  function addButtons() {
    document.querySelectorAll(".readme pre").forEach(addButton);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addButtons);
  } else {
    addButtons();
  }
})();
