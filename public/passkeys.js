// Passkeys without WebAssembly (app/src/passkeys.rs): asks a server function for a ceremony's
// options, runs it with navigator.credentials, and posts the answer in the page's hidden form
// (a plain form post, so the server redirects as for any other sign-in). Shown only where the
// browser has passkeys; without JavaScript the password and code forms work as before.
(function () {
  if (window.stepgatePasskeys) return; // the script may be included twice on a page
  window.stepgatePasskeys = true;
  var supported = !!(window.PublicKeyCredential && navigator.credentials);

  // webauthn-rs writes binary fields as unpadded base64url; the browser wants ArrayBuffers.
  function decode(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }
  function encode(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(json) {
    var options = JSON.parse(json).publicKey;
    options.challenge = decode(options.challenge);
    options.user.id = decode(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = decode(c.id); });
    return options;
  }
  function requestOptions(json) {
    var options = JSON.parse(json).publicKey;
    options.challenge = decode(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = decode(c.id); });
    return options;
  }
  // The answer as PublicKeyCredential.toJSON() writes it (what webauthn-rs reads).
  function answer(credential) {
    var r = credential.response, response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = encode(r.attestationObject);
    } else {
      response.authenticatorData = encode(r.authenticatorData);
      response.signature = encode(r.signature);
      if (r.userHandle) response.userHandle = encode(r.userHandle);
    }
    return JSON.stringify({
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: {},
    });
  }
  // The sentences of the errors these calls can answer (engine/src/error.rs has the table).
  var SENTENCES = {
    not_signed_in: "Your session has ended. Sign in again, then add the passkey.",
    passkeys_unavailable: "Passkeys are not available on this Stepgate: its public address is an IP address, and passkeys need a host name (such as localhost).",
    rate_limited: "Too many tries for this account. Please wait a moment, then try again.",
    server_busy: "Stepgate is busy right now. Please try again in a moment.",
  };
  // A server function's JSON answer, or its error sentence thrown.
  function call(endpoint) {
    return fetch("/api/" + endpoint, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(SENTENCES[body.code] || "Something went wrong on our side. Please try again.");
        return body;
      });
    });
  }
  function why(error) {
    if (error && error.name === "NotAllowedError") return "The passkey request was cancelled or timed out. Try again, or use another way to sign in.";
    if (error && error.name === "InvalidStateError") return "This device already holds a passkey for your account.";
    if (error && error.name === "SecurityError") return "This browser refused passkeys for this address. Passkeys need Stepgate on a host name such as localhost.";
    return (error && error.message) || "The passkey did not work. Try again.";
  }
  function busy(button, on) {
    if (!button) return;
    if (on) {
      button.dataset.idle = button.dataset.idle || button.textContent;
      button.textContent = button.dataset.busy;
      button.disabled = true;
    } else if (button.dataset.idle) {
      button.textContent = button.dataset.idle;
      button.disabled = false;
    }
  }
  function post(box, flowId, credential) {
    var form = box.querySelector("form[data-passkey-form]");
    if (flowId) form.elements.flow_id.value = flowId;
    form.elements.passkey.value = answer(credential);
    form.submit();
  }

  // "Sign in with a passkey" on /login, and passkey autofill on the email field.
  var signIn = document.querySelector("[data-passkey-sign-in]");
  if (signIn && supported) {
    signIn.hidden = false;
    var button = signIn.querySelector("[data-passkey-start]");
    var status = signIn.querySelector("[data-passkey-status]");
    var autofill = null; // { abort, done } of the pending autofill request
    var ask = function (mediation) {
      return call("passkey_sign_in_options").then(function (ceremony) {
        var request = { publicKey: requestOptions(ceremony.options) };
        if (mediation) {
          var controller = new AbortController();
          request.mediation = mediation;
          request.signal = controller.signal;
          var done = navigator.credentials.get(request);
          autofill = { abort: function () { controller.abort(); }, done: done };
          return done.then(function (credential) { return [ceremony.state, credential]; });
        }
        return navigator.credentials.get(request).then(function (credential) { return [ceremony.state, credential]; });
      }).then(function (answered) {
        if (!answered[1]) throw new Error("No passkey was chosen.");
        status.textContent = "Signing in…";
        post(signIn, answered[0], answered[1]);
      });
    };
    button.addEventListener("click", function () {
      // The browser runs one request at a time: the autofill one ends first.
      var before = Promise.resolve();
      if (autofill) {
        autofill.abort();
        before = autofill.done.catch(function () {});
        autofill = null;
      }
      busy(button, true);
      status.textContent = "Waiting for your passkey…";
      before.then(function () { return ask(null); }).catch(function (error) {
        busy(button, false);
        status.textContent = why(error);
      });
    });
    // After a refused passkey the page says why; autofill waits for the user to choose again.
    var refused = signIn.querySelector("[role=alert]");
    if (!refused && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (!available) return;
        ask("conditional").catch(function () { /* autofill not used, or aborted by the button */ });
      });
    }
  }

  // "Use a passkey" on the code step: the options came with the page.
  document.querySelectorAll("[data-passkey-verify]").forEach(function (box) {
    if (!supported) return;
    box.hidden = false;
    var button = box.querySelector("[data-passkey-start]");
    var status = box.querySelector("[data-passkey-status]");
    button.addEventListener("click", function () {
      busy(button, true);
      status.textContent = "Waiting for your passkey…";
      navigator.credentials.get({ publicKey: requestOptions(box.dataset.options) }).then(function (credential) {
        status.textContent = "Signing in…";
        post(box, null, credential);
      }).catch(function (error) {
        busy(button, false);
        status.textContent = why(error);
      });
    });
  });

  // "Add a passkey" on /settings/security.
  document.querySelectorAll("form[data-passkey-add]").forEach(function (form) {
    var status = form.querySelector("[data-passkey-status]");
    if (!supported) {
      status.textContent = "This browser cannot make passkeys.";
      return;
    }
    form.hidden = false;
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      busy(button, true);
      status.textContent = "Waiting for your passkey…";
      call("passkey_registration_options").then(function (ceremony) {
        form.elements.state.value = ceremony.state;
        return navigator.credentials.create({ publicKey: creationOptions(ceremony.options) });
      }).then(function (credential) {
        form.elements.passkey.value = answer(credential);
        status.textContent = "Saving the passkey…";
        form.submit();
      }).catch(function (error) {
        busy(button, false);
        status.textContent = why(error);
      });
    });
  });
})();
