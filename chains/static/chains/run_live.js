// The run page refreshes its live panel every second until the run is finished. While a
// comment for an approval is being written, the panel is left as it is (it would wipe it).
(function () {
  "use strict";
  function writing(panel) {
    var active = document.activeElement;
    if (active && panel.contains(active) && active.matches("textarea, input[type=text]")) {
      return true;
    }
    return Array.prototype.some.call(panel.querySelectorAll(".tc-decide textarea"), function (box) {
      return box.value.trim() !== "";
    });
  }

  function start() {
    var panel = document.getElementById("tc-run-panel");
    if (!panel || panel.dataset.finished === "1") return;
    function tick() {
      if (writing(panel)) { setTimeout(tick, 1000); return; }
      fetch(panel.dataset.url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status);
          var finished = response.headers.get("X-Run-Finished") === "1";
          return response.text().then(function (html) {
            if (writing(panel)) { setTimeout(tick, 1000); return; }
            // Scrolled boxes (the timeline) keep their place when the panel is redrawn.
            var kept = {};
            panel.querySelectorAll("[data-keep-scroll]").forEach(function (box) {
              kept[box.dataset.keepScroll] = [box.scrollTop, box.scrollLeft];
            });
            panel.innerHTML = html;
            panel.querySelectorAll("[data-keep-scroll]").forEach(function (box) {
              var at = kept[box.dataset.keepScroll];
              if (at) { box.scrollTop = at[0]; box.scrollLeft = at[1]; }
            });
            panel.dataset.finished = finished ? "1" : "0";
            if (!finished) setTimeout(tick, 1000);
          });
        })
        .catch(function () { setTimeout(tick, 3000); });
    }
    setTimeout(tick, 1000);
  }
  document.addEventListener("DOMContentLoaded", start);
  // Forms and buttons that ask first (Cancel, Reject): the panel is re-rendered every second,
  // so listen above it.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = (button && button.dataset && button.dataset.confirm) ||
      (event.target.dataset && event.target.dataset.confirm);
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
