// The run page refreshes its live panel every second until the run is finished.
(function () {
  "use strict";
  function start() {
    var panel = document.getElementById("tc-run-panel");
    if (!panel || panel.dataset.finished === "1") return;
    function tick() {
      fetch(panel.dataset.url, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status);
          var finished = response.headers.get("X-Run-Finished") === "1";
          return response.text().then(function (html) {
            panel.innerHTML = html;
            panel.dataset.finished = finished ? "1" : "0";
            if (!finished) setTimeout(tick, 1000);
          });
        })
        .catch(function () { setTimeout(tick, 3000); });
    }
    setTimeout(tick, 1000);
  }
  document.addEventListener("DOMContentLoaded", start);
  // Forms that ask first (Cancel): the panel is re-rendered every second, so listen above it.
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
