// Plain forms, no WebAssembly: while the server works on a submitted form its button says so
// ("Signing in…") and cannot be pressed twice. Loaded on every page; a few lines on purpose.
(function () {
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !(form instanceof HTMLFormElement)) return;
    // The button that sent the form (a step may have several); else the form's first.
    var button = event.submitter && event.submitter.dataset.busy !== undefined
      ? event.submitter
      : form.querySelector("button[type=submit][data-busy]");
    if (!button) return;
    form.setAttribute("aria-busy", "true");
    button.dataset.idle = button.textContent;
    button.textContent = button.dataset.busy;
    // After the submit has been taken (a disabled button would drop out of the form data).
    setTimeout(function () { button.disabled = true; }, 0);
  });
  // Back from the next page (back/forward cache): the form is idle again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("button[data-idle]").forEach(function (button) {
      button.textContent = button.dataset.idle;
      button.disabled = false;
      button.form && button.form.removeAttribute("aria-busy");
    });
  });
})();
