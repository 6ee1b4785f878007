// The sign-in code step without WebAssembly (app/src/pages/second_factor.rs renders a plain
// form): keeps only the digits of what is typed, sends a whole pasted code at once, and runs the
// TOTP provider popup. The popup opens from the click itself (so blockers allow it), centred,
// 600×700; a code comes back by postMessage and is taken only from the provider's origin, from
// the window this page opened, and in exactly the shape {type: "stepgate.totp", code}. The field
// stays usable whatever the popup does; when a blocker stops the popup, a plain link opens the
// provider without an opener (its codes are typed: only our own window may send them).
(function () {
  var form = document.querySelector("form[data-code-form]");
  var popupBox = document.querySelector("[data-totp-popup]");
  if (!form || !popupBox || form.dataset.enhanced) return;
  form.dataset.enhanced = "true";
  var input = form.querySelector("input[name=code]");
  var digits = Number(form.dataset.digits) || 6;
  var deepLink = popupBox.dataset.deepLink;
  var providerOrigin = new URL(deepLink, location.href).origin;
  var openButton = popupBox.querySelector("[data-totp-popup-open]");
  var notice = popupBox.querySelector("[data-totp-popup-notice]");
  var opened = null;
  var watch = null;

  function onlyDigits(text) { return String(text).replace(/[^0-9]/g, ""); }
  function send(code) {
    input.value = code;
    // Sent once: a second paste or message while the server checks the first is dropped.
    if (form.getAttribute("aria-busy") === "true") return;
    form.requestSubmit();
  }

  input.addEventListener("input", function () {
    var kept = onlyDigits(input.value);
    if (kept !== input.value) input.value = kept;
  });
  input.addEventListener("paste", function (event) {
    var pasted = onlyDigits((event.clipboardData && event.clipboardData.getData("text")) || "");
    if (pasted.length !== digits) return;
    event.preventDefault();
    send(pasted);
  });

  function tell(parts) {
    notice.textContent = "";
    parts.forEach(function (part) { notice.append(part); });
    notice.hidden = false;
  }
  function quiet() {
    notice.hidden = true;
    notice.textContent = "";
  }

  // The code in a message of exactly {type: "stepgate.totp", code: "<6 or 8 digits>"}.
  function codeFrom(data) {
    if (data === null || typeof data !== "object" || Array.isArray(data)) return null;
    if (Object.keys(data).length !== 2 || data.type !== "stepgate.totp") return null;
    var code = data.code;
    return typeof code === "string" && /^([0-9]{6}|[0-9]{8})$/.test(code) ? code : null;
  }
  window.addEventListener("message", function (event) {
    if (!opened || event.origin !== providerOrigin || event.source !== opened) return;
    var code = codeFrom(event.data);
    if (code) send(code);
  });

  function centred() {
    var width = 600, height = 700;
    var left = Math.max(0, Math.round(window.screenX + (window.outerWidth - width) / 2));
    var top = Math.max(0, Math.round(window.screenY + (window.outerHeight - height) / 2));
    return "popup=yes,width=" + width + ",height=" + height + ",left=" + left + ",top=" + top;
  }
  openButton.addEventListener("click", function () {
    var popup = window.open(deepLink, "stepgate_totp", centred());
    clearInterval(watch);
    if (!popup) {
      var link = document.createElement("a");
      link.href = deepLink;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = "Open the TOTP provider";
      tell(["Your browser blocked the popup. ", link, " and type the code here."]);
      return;
    }
    opened = popup;
    quiet();
    // Only a hint for the user: `closed` can read true early under COOP, so nothing else
    // depends on it.
    watch = setInterval(function () {
      if (popup.closed) {
        clearInterval(watch);
        tell(["The TOTP provider window was closed. Open it again, or type the code."]);
      }
    }, 700);
  });

  // Ready: the button works now.
  openButton.disabled = false;
  openButton.removeAttribute("aria-describedby");
  var notReady = document.getElementById("totp-popup-not-ready");
  if (notReady) notReady.remove();
})();
