// Live updates for the console's overview and request log: progressive enhancement, the pages work without
// it. Each element with data-live names a Server-Sent Events stream of the gateway; every "rows" event
// carries the element's new rows, rendered (and escaped) by the server from the page's own template.
"use strict";
(function () {
  if (!window.EventSource) {
    return;
  }
  document.querySelectorAll("[data-live]").forEach(function (target) {
    var source = new EventSource(target.getAttribute("data-live"));
    source.addEventListener("rows", function (event) {
      target.innerHTML = JSON.parse(event.data).html;
    });
    // Leaving the page closes the stream at once instead of when the server next writes.
    window.addEventListener("pagehide", function () {
      source.close();
    });
  });
})();
