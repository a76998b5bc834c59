// visfeat gallery: the layer grid (built from units.js: filter and sort) and unit-page conveniences.
// Labels come from the model and the spec: they are inserted as text (textContent), never as HTML.
(function () {
  "use strict";
  var grid = document.getElementById("grid");
  if (grid && window.VF_UNITS) {
    var units = window.VF_UNITS.units;
    var cells = units.map(function (u) {
      var a = document.createElement("a");
      a.className = "cell";
      a.href = u.slug + ".html";
      a.title = u.name + (u.label ? " — " + u.label : "");
      var img = document.createElement("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.width = 128;
      img.height = 128;
      img.alt = u.name;
      img.src = u.thumb;
      var name = document.createElement("div");
      name.textContent = u.name;
      var label = document.createElement("div");
      label.className = "card-label";
      label.textContent = u.label || "";
      var trust = document.createElement("div");
      var flags = u.flags || [];
      trust.className = "card-label" + (flags.length ? " flag" : "");
      trust.title = flags.join(", ");
      trust.textContent = (u.ratio == null ? "" : u.ratio.toFixed(2) + "x") +
        (u.path == null ? "" : " · path " + u.path.toFixed(2)) +
        (u.change == null ? "" : " · Δ " + u.change.toFixed(2) + "×") +
        (flags.indexOf("different-path") >= 0 ? " ⚠ other path" : flags.length ? " ⚠" : "");
      a.appendChild(img); a.appendChild(name); a.appendChild(label); a.appendChild(trust);
      return { unit: u, el: a, text: (String(u.index) + " " + u.name + " " + (u.label || "")).toLowerCase() };
    });
    var filter = document.getElementById("filter");
    var sort = document.getElementById("sort");
    var count = document.getElementById("count");
    var flagged = document.getElementById("flagged");
    function key(c, by) {
      var v = c.unit[by];
      return v == null ? -Infinity : v;
    }
    function draw() {
      var q = filter.value.trim().toLowerCase();
      var by = sort.value;
      var only = flagged && flagged.checked;
      var shown = cells.filter(function (c) {
        return (!q || c.text.indexOf(q) >= 0) && (!only || (c.unit.flags || []).length > 0);
      });
      shown.sort(function (a, b) {
        if (by === "index") return a.unit.index - b.unit.index;
        if (by === "label") return String(a.unit.label || a.unit.name).localeCompare(String(b.unit.label || b.unit.name));
        return key(b, by) - key(a, by);
      });
      grid.replaceChildren.apply(grid, shown.map(function (c) { return c.el; }));
      count.textContent = shown.length + " of " + cells.length + " units";
    }
    filter.addEventListener("input", draw);
    sort.addEventListener("change", draw);
    if (flagged) flagged.addEventListener("change", draw);
    draw();
  }
  var heat = document.getElementById("heat");
  if (heat) {
    heat.addEventListener("change", function () { document.body.classList.toggle("noheat", !heat.checked); });
  }
  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) return;
    var link = document.getElementById(e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : "");
    if (link) link.click();
  });
})();
