// The accounts page without WebAssembly: rows whose health check is under way say
// "Checking…"; this asks the server every second until every check has answered, then shows
// each row's status (and "Sign in again" and "Send a sign-in link" where the provider refused
// the account's tokens).
(function () {
  var tries = 0;
  function pending() {
    return document.querySelectorAll('td.account-status[data-status="checking"]').length > 0;
  }
  function show(rows) {
    rows.forEach(function (row) {
      var tr = document.querySelector('tr[data-account="' + row.id + '"]');
      if (!tr) return;
      var cell = tr.querySelector("td.account-status");
      if (cell.dataset.status === row.status) return;
      cell.dataset.status = row.status;
      cell.querySelector(".status-label").textContent = row.status_label;
      cell.querySelector(".status-problem").textContent = row.problem || "";
      tr.querySelectorAll("form.reauth").forEach(function (form) {
        form.hidden = row.status !== "needs_sign_in";
      });
    });
  }
  function poll() {
    if (!pending() || tries++ > 60) return;
    fetch("/api/account_statuses", { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(show)
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 500);
})();
