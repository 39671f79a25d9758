// Draws the roadmap's diagrams with the locally served mermaid (no CDN). Runs on every page load,
// including mkdocs-material's instant navigation, and redraws when the colour scheme changes.
// When a drawing is over, <html data-planner-diagrams> says how it ended ("drawn", "failed", "none" or
// "unavailable") and a "planner:diagrams" event is dispatched, so tests (and other scripts) wait for the
// diagrams instead of guessing how long mermaid takes.
(function () {
  "use strict";

  function settled(state) {
    document.documentElement.setAttribute("data-planner-diagrams", state);
    document.dispatchEvent(new CustomEvent("planner:diagrams", { detail: state }));
  }

  function scheme() {
    var body = document.body;
    return body && body.getAttribute("data-md-color-scheme") === "slate" ? "dark" : "default";
  }

  function draw() {
    var nodes = Array.prototype.slice.call(document.querySelectorAll(".planner-mermaid"));
    if (!nodes.length) {
      settled("none");
      return;
    }
    if (typeof window.mermaid === "undefined") {
      settled("unavailable"); // without the library the diagram's source stays readable as text
      return;
    }
    document.documentElement.setAttribute("data-planner-diagrams", "drawing");
    nodes.forEach(function (node) {
      if (node.dataset.source === undefined) {
        node.dataset.source = node.textContent;
      } else {
        node.removeAttribute("data-processed");
        node.textContent = node.dataset.source;
      }
    });
    window.mermaid.initialize({ startOnLoad: false, theme: scheme(), securityLevel: "strict" });
    window.mermaid.run({ nodes: nodes }).then(
      function () {
        settled("drawn");
      },
      function (error) {
        console.error("roadmap diagram:", error);
        settled("failed");
      }
    );
  }

  if (typeof window.document$ !== "undefined" && window.document$.subscribe) {
    window.document$.subscribe(draw);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
  new MutationObserver(function (changes) {
    if (changes.some(function (c) { return c.attributeName === "data-md-color-scheme"; })) {
      draw();
    }
  }).observe(document.body, { attributes: true, attributeFilter: ["data-md-color-scheme"] });
})();
