// Chain builder: drag step rows to reorder them (positions follow the rows), swap a row's
// params form when its step type changes, and show a schedule's fields for its kind only.
(function () {
  "use strict";

  function rows(table) {
    return Array.prototype.filter.call(table.querySelectorAll("tbody tr.form-row"), function (row) {
      return !row.classList.contains("empty-form");
    });
  }

  function renumber(table) {
    rows(table).forEach(function (row, index) {
      var input = row.querySelector("input.tc-position");
      if (input) input.value = index;
    });
  }

  var dragged = null;  // the row being dragged; shared by every row's handlers

  function makeDraggable(table) {
    rows(table).forEach(function (row) {
      if (row.dataset.tcDrag) return;
      row.dataset.tcDrag = "1";
      // A handle in the row's first visible cell starts the drag; inputs stay selectable.
      var handle = document.createElement("span");
      handle.className = "tc-handle";
      handle.title = "Drag to reorder";
      handle.textContent = "\u2630";
      var cell = row.querySelector("td.field-stage") || row.querySelector("td");
      cell.insertBefore(handle, cell.firstChild);
      var fromHandle = false;
      row.draggable = true;
      row.addEventListener("mousedown", function (event) { fromHandle = event.target === handle; });
      row.addEventListener("dragstart", function (event) {
        if (!fromHandle) { event.preventDefault(); return; }
        dragged = row;
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", "step");
        row.classList.add("tc-dragging");
      });
      row.addEventListener("dragend", function () {
        fromHandle = false;
        row.classList.remove("tc-dragging");
        dragged = null;
        renumber(table);
      });
      row.addEventListener("dragover", function (event) {
        if (!dragged || dragged === row) return;
        event.preventDefault();
        var box = row.getBoundingClientRect();
        var after = event.clientY > box.top + box.height / 2;
        row.parentNode.insertBefore(dragged, after ? row.nextSibling : row);
      });
    });
    renumber(table);
  }

  function schemaUrl(key) {
    var holder = document.getElementById("tc-schema-url");
    return holder ? JSON.parse(holder.textContent).replace("KEY", encodeURIComponent(key)) : null;
  }

  function swapParamsForm(select) {
    var row = select.closest("tr");
    var textarea = row && row.querySelector("textarea[data-django-jsonform]");
    var url = schemaUrl(select.value);
    if (!textarea || !url || !select.value) return;
    fetch(url, { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (schema) {
        var config = JSON.parse(textarea.dataset.djangoJsonform);
        config.schema = schema;
        config.data = JSON.stringify({});
        var container = textarea.previousElementSibling;
        var freshContainer = document.createElement("div");
        freshContainer.setAttribute("data-django-jsonform-container", "true");
        var fresh = document.createElement("textarea");
        fresh.id = textarea.id;
        fresh.name = textarea.name;
        fresh.style.display = "none";
        fresh.value = "{}";
        fresh.dataset.djangoJsonform = JSON.stringify(config);
        var parent = textarea.parentNode;
        parent.removeChild(container);
        parent.removeChild(textarea);
        // django-jsonform renders editors found inside newly added elements.
        var wrapper = document.createElement("div");
        wrapper.appendChild(freshContainer);
        wrapper.appendChild(fresh);
        parent.appendChild(wrapper);
      });
  }

  // Schedules: only the fields of the chosen kind are shown.
  var KIND_FIELDS = { interval: ["every_seconds"], crontab: ["minute"], once: ["run_at"] };

  function showKindFields(select) {
    var box = select.closest(".inline-related");
    if (!box) return;
    Object.keys(KIND_FIELDS).forEach(function (kind) {
      KIND_FIELDS[kind].forEach(function (field) {
        var line = box.querySelector(".form-row.field-" + field);
        if (line) line.style.display = kind === select.value ? "" : "none";
      });
    });
  }

  function showAllKindFields() {
    document.querySelectorAll(".tc-schedules select[name$='-kind']").forEach(showKindFields);
  }

  document.addEventListener("DOMContentLoaded", function () {
    showAllKindFields();
    document.addEventListener("formset:added", showAllKindFields);
    document.addEventListener("change", function (event) {
      if (event.target.matches(".tc-schedules select[name$='-kind']")) showKindFields(event.target);
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector(".tc-steps table");
    if (!table) return;
    makeDraggable(table);
    document.addEventListener("formset:added", function () { makeDraggable(table); });
    table.addEventListener("change", function (event) {
      if (event.target.matches("select.tc-step-type")) swapParamsForm(event.target);
    });
  });
})();
