// Vigil UI conveniences. Every page works without this file.
"use strict";
(function () {
  // "/" focuses the page's query box, as in most log tools.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var box = document.getElementById("q") || document.getElementById("metric-name");
    if (box) { e.preventDefault(); box.focus(); box.select(); }
  });
  // Times shown in UTC get the reader's local time as a tooltip.
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d.getTime())) el.title = d.toLocaleString() + " (your time)";
  });
  // A button pressed twice must not send the action twice.
  document.querySelectorAll("form[method=post]").forEach(function (f) {
    f.addEventListener("submit", function () {
      f.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    });
  });
})();
