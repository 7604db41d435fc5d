// eIM dashboard: the only script (no library). Two jobs:
//  1. live updates by short polling: an element with data-poll="<url>" gets that URL's HTML fragment every
//     data-every ms (default 2000) and takes it as its content; polling stops once the fragment says
//     data-state="ended", and the page reloads when the session has ended (the answer is the login page);
//  2. forms with data-confirm="<question>" ask before they are sent.
(function () {
  "use strict";
  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "2000", 10);
    var busy = false;
    var timer = setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(el.getAttribute("data-poll"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          if (r.redirected && r.url.indexOf("/ui/login") >= 0) { location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          busy = false;
          if (html === null) { return; }
          el.innerHTML = html;
          bindConfirms(el);
          if (el.querySelector('[data-state="ended"]')) { clearInterval(timer); }
        })
        .catch(function () { busy = false; });
    }, every);
  }
  function bindConfirms(root) {
    var forms = root.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      if (forms[i].getAttribute("data-bound")) { continue; }
      forms[i].setAttribute("data-bound", "1");
      forms[i].addEventListener("submit", function (ev) {
        if (!window.confirm(this.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-poll]");
    for (var i = 0; i < live.length; i++) {
      if (!live[i].querySelector('[data-state="ended"]')) { poll(live[i]); }
    }
    bindConfirms(document);
  });
})();
