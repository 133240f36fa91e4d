// Copy buttons: <button data-copy="ID"> copies the text of the element with that id.
// The buttons start hidden, so a page without JavaScript shows no button that does nothing.
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      }, function () {
        button.textContent = "Select and copy it by hand";
      });
    });
  });
})();
