/* The rule form: show only the chosen kind's parameters (all are shown without JavaScript,
   and the server reads only the chosen kind's). */
(function () {
  "use strict";
  function sync() {
    var kind = document.getElementById("id_kind");
    if (!kind) return;
    document.querySelectorAll("fieldset.kind-params").forEach(function (set) {
      var chosen = set.getAttribute("data-kind") === kind.value;
      set.hidden = !chosen;
      // Hidden fields must not block submission through the browser's own checks.
      set.disabled = !chosen;
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target && event.target.id === "id_kind") sync();
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", sync);
  else sync();
})();
