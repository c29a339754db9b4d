// patchci: progressive enhancement only; every page works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A filter menu applies as soon as it changes (the Filter button stays for keyboards).
  document.querySelectorAll("form.filters select.autosubmit").forEach(function (sel) {
    sel.addEventListener("change", function () {
      // Untouched fields would only add empty "?q=&submitter=" noise to the URL.
      var form = sel.form;
      form.querySelectorAll("input, select").forEach(function (el) {
        if (el.value === "") { el.disabled = true; }
      });
      form.submit();
    });
  });
});
