(function () {
  var model = document.getElementById("filter-model"), why = document.getElementById("filter-why");
  var count = document.getElementById("filter-count");
  if (!model || !why) return;
  var items = document.querySelectorAll("details.example");
  function apply() {
    var shown = 0;
    for (var i = 0; i < items.length; i++) {
      var d = items[i];
      var ok = (model.value === "" || d.getAttribute("data-model") === model.value) &&
        (why.value === "" || d.getAttribute("data-why") === why.value);
      d.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown + " of " + items.length + " shown";
  }
  model.addEventListener("change", apply);
  why.addEventListener("change", apply);
  apply();
})();
