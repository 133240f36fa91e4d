// Copy buttons: one on every code block of a README or changelog, and every
// <button data-copy="ID"> (hidden until this script shows it) copies the element with that id.
// A file, not an inline script: the Content-Security-Policy forbids inline scripts.
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

  function wireCopyButton(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(source.textContent.trim()).then(
        function () { button.textContent = "Copied"; },
        function () {
          window.getSelection().selectAllChildren(source);
          button.textContent = "Selected: press Ctrl+C";
        }
      );
    });
  }

  function addButtons() {
    document.querySelectorAll(".readme pre").forEach(addButton);
    document.querySelectorAll("button[data-copy]").forEach(wireCopyButton);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addButtons);
  } else {
    addButtons();
  }
})();
