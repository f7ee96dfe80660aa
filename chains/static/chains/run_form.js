// Run now: the inputs are checked as JSON while they are typed; the reason shows next to the
// field and the run cannot be started until they parse (empty means the chain's defaults).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("id_inputs");
    var note = document.getElementById("tc-inputs-error");
    if (!box || !note) return;
    var submit = box.form.querySelector("input[type=submit]");
    function check() {
      var text = box.value.trim(), problem = "";
      if (text) {
        try { JSON.parse(text); } catch (error) { problem = "not valid JSON: " + error.message; }
      }
      note.hidden = !problem;
      note.firstElementChild.textContent = problem;
      box.closest(".form-row").classList.toggle("errors", Boolean(problem));
      if (submit) submit.disabled = Boolean(problem);
    }
    box.addEventListener("input", check);
  });
})();
