// The "Copy" button of a secret shown once (a new API key, a webhook signing secret): copies the
// read-only field and says so in a live region.
// Without JavaScript (or clipboard access) the field is still there to select and copy.
(function () {
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var field = document.getElementById(button.dataset.copy);
    var status = document.getElementById(button.dataset.copy + "-copied");
    if (!field) return;
    var say = function (text) { if (status) status.textContent = text; };
    field.select();
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(field.value).then(
        function () { say("Copied"); },
        function () { say("Could not copy: select the key and copy it yourself."); }
      );
    } else {
      say("Could not copy: select the key and copy it yourself.");
    }
  });
})();
