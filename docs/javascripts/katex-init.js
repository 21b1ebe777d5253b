// Typeset pymdownx.arithmatex markup (generic mode) with the site's own copy of KaTeX.
// Inline math arrives as <span class="arithmatex">\(...\)</span>, display math as
// <div class="arithmatex">\[...\]</div>. A formula KaTeX cannot parse is left as it is and
// reported on the console (docs/check_site.py fails on both).
(function () {
  function typeset(root) {
    var math = root.querySelectorAll(".arithmatex");
    if (!math.length) return;
    if (typeof katex === "undefined") {
      console.error("KaTeX did not load (assets/katex/katex.min.js): " + math.length + " formulas left as TeX");
      return;
    }
    math.forEach(function (el) {
      if (el.querySelector(".katex")) return;
      var text = el.textContent.trim();
      var display = el.tagName === "DIV";
      var tex = text.replace(/^\\[(\[]/, "").replace(/\\[)\]]$/, "");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: true, output: "htmlAndMathml" });
      } catch (err) {
        el.textContent = text;  // katex.render empties the element before it parses
        console.error("KaTeX: " + err.message + " in " + text);
      }
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { typeset(document.body); });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { typeset(document.body); });
  } else {
    typeset(document.body);
  }
})();
