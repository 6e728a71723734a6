// wavesync console: "select all" in the dead-letter list, and buttons that need a selection stay off without one.
(function () {
  "use strict";
  function sync(form) {
    var any = form.querySelectorAll('input[name="ids"]:checked').length > 0;
    form.querySelectorAll("[data-needs-selection]").forEach(function (b) { b.disabled = !any; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-select-all]").forEach(function (all) {
      var form = all.closest("form");
      all.addEventListener("change", function () {
        form.querySelectorAll('input[name="ids"]').forEach(function (c) { c.checked = all.checked; });
        sync(form);
      });
      form.addEventListener("change", function () { sync(form); });
      sync(form);
    });
  });
})();
