// The TOTP provider's registration callback page (server/src/totp_callback.rs), in its popup.
// A file rather than an inline script, so the Content-Security-Policy needs no exception.
(function () {
  // The seed came in this page's URL: drop it from the address bar and history.
  history.replaceState(null, "", window.location.pathname);
  // Tell the settings page (same origin only) and close; if the opener link was cut, the
  // settings page notices by polling instead.
  var outcome = document.body.getAttribute("data-outcome");
  if (window.opener && !window.opener.closed) {
    try {
      window.opener.postMessage({ type: "stepgate.totp-" + outcome }, window.location.origin);
    } catch (e) {}
    if (outcome === "enrolled") window.close();
  }
})();
