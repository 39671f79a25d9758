// Draws the roadmap's diagrams with the locally served mermaid (no CDN). Runs on every page load,
// including mkdocs-material's instant navigation, and redraws when the colour scheme changes.
(function () {
  "use strict";

  function scheme() {
    var body = document.body;
    return body && body.getAttribute("data-md-color-scheme") === "slate" ? "dark" : "default";
  }

  function draw() {
    var nodes = Array.prototype.slice.call(document.querySelectorAll(".planner-mermaid"));
    if (!nodes.length || typeof window.mermaid === "undefined") {
      return; // without the library the diagram's source stays readable as text
    }
    nodes.forEach(function (node) {
      if (node.dataset.source === undefined) {
        node.dataset.source = node.textContent;
      } else {
        node.removeAttribute("data-processed");
        node.textContent = node.dataset.source;
      }
    });
    window.mermaid.initialize({ startOnLoad: false, theme: scheme(), securityLevel: "strict" });
    window.mermaid.run({ nodes: nodes }).catch(function (error) {
      console.error("roadmap diagram:", error);
    });
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
