/* Request log explorer: a row opens its detail below itself; a second click closes it. */
(function () {
  "use strict";

  function detailCell(row) {
    var sel = row.getAttribute("hx-target");
    return sel ? document.querySelector(sel) : null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("main");

    // The time cell's link is for people without JavaScript (and for opening a new tab);
    // a plain click lets the row's hx-get show the detail in place instead.
    main.addEventListener("click", function (event) {
      var link = event.target.closest(".log-row a");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
    });

    main.addEventListener("htmx:beforeRequest", function (event) {
      var row = event.detail.elt;
      if (!row.classList || !row.classList.contains("log-row")) return;
      var cell = detailCell(row);
      if (cell && cell.childElementCount) {
        event.preventDefault(); // already open: close instead of fetching again
        cell.replaceChildren();
        row.classList.remove("open");
        row.setAttribute("aria-expanded", "false");
      }
    });

    main.addEventListener("htmx:afterSwap", function (event) {
      var cell = event.detail.target;
      if (!cell || !cell.id || cell.id.indexOf("detail-") !== 0) return;
      var row = cell.parentElement.previousElementSibling;
      if (row) {
        row.classList.add("open");
        row.setAttribute("aria-expanded", "true");
      }
    });

    // Rows are focusable: Enter or Space opens them like a click.
    main.addEventListener("keydown", function (event) {
      var row = event.target.closest && event.target.closest(".log-row");
      if (!row || event.target !== row || (event.key !== "Enter" && event.key !== " ")) return;
      event.preventDefault();
      row.click();
    });
  });
})();
