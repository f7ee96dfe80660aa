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
    // The old type's params are not the new type's: gone at once, so a Save before the new
    // form arrives sends none rather than the old ones.
    textarea.value = "{}";
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

  // Stages: a new row takes the next stage; "parallel with the step above" is a deliberate
  // choice (the row takes the stage of the row above). The picture follows the screen.
  function stageInput(row) { return row.querySelector("td.field-stage input"); }

  function liveRows(table) {
    return rows(table).filter(function (row) {
      var remove = row.querySelector("td.delete input[type=checkbox]");
      return !(remove && remove.checked) && !row.classList.contains("deleted");
    });
  }

  function addParallelControls(table) {
    rows(table).forEach(function (row, index) {
      var cell = row.querySelector("td.field-stage");
      if (!cell || cell.querySelector(".tc-parallel")) return;
      var label = document.createElement("label");
      label.className = "tc-parallel";
      label.title = "Run at the same time as the step above (same stage)";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.className = "tc-parallel-box";
      label.appendChild(box);
      label.appendChild(document.createTextNode(" parallel with above"));
      cell.appendChild(label);
      box.addEventListener("change", function () {
        var all = rows(table), at = all.indexOf(row);
        var above = at > 0 ? Number(stageInput(all[at - 1]).value || 0) : 0;
        stageInput(row).value = box.checked ? above : above + 1;
        changed(table);
      });
    });
    syncParallelBoxes(table);
  }

  function syncParallelBoxes(table) {
    var all = rows(table);
    all.forEach(function (row, index) {
      var box = row.querySelector(".tc-parallel-box");
      if (!box) return;
      box.disabled = index === 0;
      box.checked = index > 0 && stageInput(row).value !== "" &&
        stageInput(row).value === stageInput(all[index - 1]).value;
    });
  }

  function nextStage(table, except) {
    var highest = -1;
    rows(table).forEach(function (row) {
      if (row === except) return;
      var value = Number(stageInput(row).value);
      if (stageInput(row).value !== "" && value > highest) highest = value;
    });
    return highest + 1;
  }

  // A row as the picture preview reads it: stage, label, type, map, condition and, for a
  // flow.chain step, the chain it calls (from its params form).
  function rowForPicture(row) {
    var name = row.querySelector("td.field-name input");
    var type = row.querySelector("select.tc-step-type");
    var map = row.querySelector("td.field-map input[type=checkbox]");
    var step = {
      stage: Number(stageInput(row).value || 0),
      label: (name && name.value) || "",
      type: (type && type.value) || "",
      map: Boolean(map && map.checked),
      when: readWhen(row)
    };
    if (step.type === "flow.chain") {
      var params = row.querySelector("td.field-params textarea[data-django-jsonform]");
      try {
        var value = params ? JSON.parse(params.value || "{}") : {};
        if (value && typeof value.chain === "string") step.chain = value.chain;
      } catch (error) { /* the form is being edited */ }
    }
    return step;
  }

  function readWhen(row) {
    var path = row.querySelector("td.field-when .tc-when-path");
    var op = row.querySelector("td.field-when .tc-when-op");
    var value = row.querySelector("td.field-when .tc-when-value");
    if (!op || !op.value) return null;
    var when = { path: path ? path.value.trim() : "", op: op.value };
    if (value && value.value.trim() && UNARY.indexOf(op.value) < 0) {
      try { when.value = JSON.parse(value.value); } catch (error) { return { op: "?" }; }
    }
    return when;
  }

  // Operators that take no value: the value box is off for them, and for "always".
  var UNARY = ["exists", "truthy"];
  function syncWhen(row) {
    var op = row.querySelector("td.field-when .tc-when-op");
    var value = row.querySelector("td.field-when .tc-when-value");
    var box = row.querySelector("td.field-when .tc-when");
    if (!op || !value || !box) return;
    box.classList.toggle("tc-when-off", !op.value);
    value.disabled = UNARY.indexOf(op.value) >= 0;
  }

  var pictureTimer = null;
  function refreshPicture(table) {
    var holder = document.getElementById("tc-picture");
    if (!holder) return;
    clearTimeout(pictureTimer);
    pictureTimer = setTimeout(function () {
      // Read when the timer fires: the params forms have written their values by then.
      var steps = liveRows(table).map(rowForPicture);
      fetch(holder.dataset.url + "?steps=" + encodeURIComponent(JSON.stringify(steps)),
            { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) holder.innerHTML = html; });
    }, 250);
  }

  // Unsaved changes: Validate looks at the saved chain, so it asks to save first.
  var dirty = false;
  function changed(table) {
    dirty = true;
    var note = document.getElementById("tc-dirty-note");
    if (note && document.querySelector("form.tc-validate")) note.hidden = false;
    syncParallelBoxes(table);
    refreshPicture(table);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector(".tc-steps table");
    if (!table) return;
    makeDraggable(table);
    addParallelControls(table);
    rows(table).forEach(syncWhen);
    if (!document.querySelector("#tc-picture svg")) refreshPicture(table);
    document.addEventListener("formset:added", function (event) {
      var row = event.target;
      if (row && row.matches && row.matches(".tc-steps tr.form-row") && stageInput(row)) {
        stageInput(row).value = nextStage(table, row);
        syncWhen(row);
      }
      makeDraggable(table);
      addParallelControls(table);
      changed(table);
    });
    document.addEventListener("formset:removed", function () { changed(table); });
    table.addEventListener("change", function (event) {
      if (event.target.matches("select.tc-step-type")) swapParamsForm(event.target);
      if (event.target.matches("select.tc-when-op")) syncWhen(event.target.closest("tr"));
    });
    var form = table.closest("form");
    form.addEventListener("input", function (event) {
      if (!event.target.classList.contains("tc-parallel-box")) changed(table);
    });
    form.addEventListener("change", function (event) {
      if (!event.target.classList.contains("tc-parallel-box")) changed(table);
    });
    table.addEventListener("dragend", function () { changed(table); });
    form.addEventListener("submit", function () { dirty = false; });
    document.querySelectorAll("form.tc-validate").forEach(function (validate) {
      validate.addEventListener("submit", function (event) {
        if (!dirty) return;
        event.preventDefault();
        window.alert("This page has unsaved changes. Save first: saving runs the same " +
                     "checks as Validate, on what is on screen.");
      });
    });
  });
})();
