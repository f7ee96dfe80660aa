// The workers and queues panel is asked for after the page has rendered: a broker that does
// not answer slows the panel, never the page.
(function () {
  "use strict";
  function load(panel) {
    fetch(panel.dataset.url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) { panel.innerHTML = html; })
      .catch(function () {
        panel.innerHTML = '<p class="errornote">The workers could not be asked (no answer ' +
          "from the server).</p>";
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".tc-cluster[data-url]").forEach(load);
  });
})();
