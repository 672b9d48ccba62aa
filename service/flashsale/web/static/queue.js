// The waiting room's panel: shown only when the service has POST /queue (FLASHSALE_WAITING_ROOM=on,
// read from /openapi.json). Joins the queue for a user id, asks GET /queue/<ticket> again after
// the retry_after it was told, and shows the place in the queue, then the pass for checkout.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var timer = null;

  function say(text, state, pass) {
    var el = $("queue-place");
    el.textContent = text;
    el.dataset.state = state;
    if (pass) {
      var code = document.createElement("code");
      code.id = "queue-pass";
      code.textContent = pass;
      el.appendChild(document.createTextNode(" X-Flashsale-Pass: "));
      el.appendChild(code);
    }
  }

  function later(path, method, seconds) {
    clearTimeout(timer);
    timer = setTimeout(function () { ask(path, method); }, Math.max(1, seconds) * 1000);
  }

  function show(t) {
    var look = "queue/" + encodeURIComponent(t.ticket);
    if (t.admitted && t.pass) {
      say("Admitted to sale " + t.sale_id + ": check out with this pass until " +
          new Date(t.pass_expires_at).toLocaleTimeString() + ".", "admitted", t.pass);
    } else if (t.admitted) {
      ask(look, "GET"); // a join answers without the pass: read the ticket for it
    } else {
      say(t.position === null
            ? "In the queue of sale " + t.sale_id + ": places are drawn when it opens, in " +
              t.retry_after + " s."
            : "Position " + t.position + " in the queue of sale " + t.sale_id + ".",
          "waiting");
      later(look, "GET", t.retry_after);
    }
  }

  function ask(path, method) {
    fetch(path, { method: method, cache: "no-store" })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.ok) return show(body);
          var code = body && body.error ? body.error.code : "HTTP " + r.status;
          var wait = parseInt(r.headers.get("Retry-After") || "0", 10);
          say("The service answered " + code + (wait ? "; asking again in " + wait + " s." : "."),
              "error");
          if (wait) later(path, method, wait);
        });
      })
      .catch(function () {
        say("Service unreachable; asking again.", "error");
        later(path, method, 2);
      });
  }

  fetch("openapi.json", { cache: "no-store" })
    .then(function (r) { return r.ok ? r.json() : {}; })
    .then(function (doc) {
      var open = !!(doc.paths && doc.paths["/queue"]);
      $("queue").hidden = !open;
      $("queue").dataset.checked = "yes";
      if (!open) return;
      $("queue-form").addEventListener("submit", function (event) {
        event.preventDefault();
        ask("queue?user_id=" + encodeURIComponent($("queue-user").value), "POST");
      });
    })
    .catch(function () {});
})();
