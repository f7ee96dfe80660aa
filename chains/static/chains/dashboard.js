// The dashboard reloads itself every N seconds (data-refresh-seconds), unless the page is
// hidden; "Refresh now" reloads at once.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var page = document.querySelector(".tc-dashboard[data-refresh-seconds]");
    if (!page) return;
    var seconds = Number(page.dataset.refreshSeconds) || 30;
    setInterval(function () {
      if (!document.hidden) window.location.reload();
    }, seconds * 1000);
    var now = document.getElementById("tc-refresh");
    if (now) now.addEventListener("click", function (event) {
      event.preventDefault();
      window.location.reload();
    });
  });
})();
