// Live logs (a build's, a deployment's) are re-rendered by htmx when their text changes.
// A reader at the end keeps following new output; a reader who scrolled up stays where
// they were; an open or closed <details> stays so. Elements are matched by id across swaps.
(function () {
  "use strict";
  var saved = {};

  function atEnd(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  }

  function followEnd(root) {
    root.querySelectorAll("[data-live-log]").forEach(function (log) {
      log.scrollTop = log.scrollHeight;
    });
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    target.querySelectorAll("[data-live-log][id]").forEach(function (log) {
      saved[log.id] = { end: atEnd(log), top: log.scrollTop };
    });
    target.querySelectorAll("details[id]").forEach(function (details) {
      saved[details.id] = { open: details.open };
    });
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    // A log that just appeared starts at its end.
    event.target.querySelectorAll("[data-live-log]").forEach(function (log) {
      if (!(log.id in saved)) log.scrollTop = log.scrollHeight;
    });
    Object.keys(saved).forEach(function (id) {
      var element = document.getElementById(id);
      var view = saved[id];
      if (!element) return;
      if ("open" in view) {
        element.open = view.open;
      } else {
        element.scrollTop = view.end ? element.scrollHeight : view.top;
      }
    });
    saved = {};
  });

  document.addEventListener("DOMContentLoaded", function () {
    followEnd(document);
  });
})();
