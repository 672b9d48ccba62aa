// The status page: polls GET /sale/status and the state of the items shown (GET /sale/stock)
// every second, GET /sale/items once per sale, and the sale's history (GET /sale/history) once per
// bucket of it (at least every 2 s) for the burn-down since the opening (burndown.js); counts down
// to the next sale from `ends_at` (the next sale opens when the current one ends).
// Plain JavaScript, no build step. Every number shown comes from the JSON endpoints.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var ITEMS_SHOWN = 96;

  var $ = function (id) { return document.getElementById(id); };
  var state = { saleId: null, endsAt: null, retryAt: null, itemsFor: null, itemsShown: 0,
                history: null, historyAt: 0, live: null };

  function fmtCountdown(ms) {
    if (ms < 0) ms = 0;
    var s = Math.ceil(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (s < 10 ? "0" : "") + s;
    if (h >= 24) return Math.floor(h / 24) + "d " + (h % 24) + ":" + mm + ":" + ss;
    return h > 0 ? h + ":" + mm + ":" + ss : mm + ":" + ss;
  }

  function fmtTime(iso) {
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toISOString().replace(".000Z", "Z").replace("T", " ");
  }

  function setConnection(text, ok) {
    var el = $("connection");
    el.textContent = text;
    el.dataset.state = ok ? "ok" : "error";
  }

  function showStatus(s) {
    if (s.sale_id !== state.saleId) {
      state.saleId = s.sale_id;
      state.history = null;
      state.historyAt = 0;
    }
    state.endsAt = Date.parse(s.ends_at);
    state.retryAt = null;
    $("sale-id").textContent = s.sale_id;
    $("starts-at").textContent = fmtTime(s.starts_at);
    $("ends-at").textContent = fmtTime(s.ends_at);
    $("sold").textContent = s.items_sold;
    $("reserved").textContent = s.items_reserved;
    $("remaining").textContent = s.remaining_items;
    $("total").textContent = s.total_items;
    var total = Math.max(1, s.total_items);
    $("bar-sold").style.width = (100 * s.items_sold / total) + "%";
    $("bar-reserved").style.width = (100 * s.items_reserved / total) + "%";
    $("sold-out").hidden = s.remaining_items !== 0;
    document.body.dataset.soldOut = s.remaining_items === 0 ? "yes" : "no";
    state.live = { t: Date.now(), sold: s.items_sold };
    drawBurndown();
    tickCountdown();
    if (state.itemsFor !== s.sale_id) loadItems(s.sale_id);
    else if (state.itemsShown) loadStock(s.sale_id);
    var every = Math.max(2, state.history ? state.history.bucket_seconds : 0) * 1000;
    if (Date.now() - state.historyAt >= every) loadHistory(s.sale_id);
  }

  function showNoSale(retryAfterSeconds) {
    state.saleId = null;
    state.endsAt = null;
    state.retryAt = retryAfterSeconds ? Date.now() + retryAfterSeconds * 1000 : null;
    $("sale-id").textContent = "no sale open";
    ["starts-at", "ends-at", "sold", "reserved", "remaining", "total"].forEach(function (id) {
      $(id).textContent = "—";
    });
    $("bar-sold").style.width = "0";
    $("bar-reserved").style.width = "0";
    $("sold-out").hidden = true;
    document.body.dataset.soldOut = "no";
    state.history = null;
    window.flashsaleBurndown.clear($("burndown"));
    tickCountdown();
  }

  function tickCountdown() {
    var target = state.endsAt || state.retryAt;
    $("countdown").textContent = target ? fmtCountdown(target - Date.now()) : "--:--";
  }

  function drawBurndown() {
    if (state.history && state.history.sale_id === state.saleId) {
      window.flashsaleBurndown.draw($("burndown"), state.history, state.live);
    }
  }

  function loadHistory(saleId) {
    state.historyAt = Date.now();
    fetch("sale/history")
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (history) {
        if (history.sale_id !== saleId) return;
        state.history = history;
        $("bucket").textContent = history.bucket_seconds + " s";
        drawBurndown();
      })
      .catch(function () { state.historyAt = 0; }); // retried on the next poll
  }

  // Each item shown marked available, reserved or sold, as the service has it now.
  function loadStock(saleId) {
    fetch("sale/stock?limit=" + state.itemsShown, { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (page) {
        if (page.sale_id !== saleId) return;
        var counts = { available: 0, reserved: 0, sold: 0 };
        page.items.forEach(function (item) {
          var li = document.querySelector('#item-list li[data-item-id="' + item.id + '"]');
          if (!li) return;
          li.dataset.state = item.state;
          li.querySelector(".state").textContent = item.state === "available" ? "" : item.state;
          counts[item.state] += 1;
        });
        $("items-states").textContent = counts.sold + " sold, " + counts.reserved +
          " reserved, " + counts.available + " available";
      })
      .catch(function () {}); // asked again on the next poll
  }

  function loadItems(saleId) {
    state.itemsFor = saleId;
    state.itemsShown = 0;
    fetch("sale/items?limit=" + ITEMS_SHOWN, { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (page) {
        var list = $("item-list");
        list.textContent = "";
        page.items.forEach(function (item) {
          var li = document.createElement("li"), img = document.createElement("img");
          var name = document.createElement("span"), mark = document.createElement("span");
          img.src = item.image_url;
          img.alt = item.name;
          img.loading = "lazy";
          name.className = "name";
          name.textContent = item.name;
          mark.className = "state";
          li.appendChild(img);
          li.appendChild(mark);
          li.appendChild(name);
          li.title = item.name;
          li.dataset.itemId = item.id;
          li.dataset.state = "unknown";
          list.appendChild(li);
        });
        var more = page.next_cursor ? "first " : "all ";
        $("items-count").textContent = "(" + more + page.items.length + ")";
        state.itemsShown = page.items.length;
        loadStock(saleId);
      })
      .catch(function () { state.itemsFor = null; }); // retried on the next poll
  }

  function poll() {
    fetch("sale/status", { cache: "no-store" })
      .then(function (r) {
        if (r.ok) return r.json().then(function (s) { showStatus(s); setConnection("live", true); });
        return r.json().catch(function () { return {}; }).then(function (body) {
          var code = body && body.error ? body.error.code : "HTTP " + r.status;
          if (code === "no_active_sale") {
            showNoSale(parseInt(r.headers.get("Retry-After") || "0", 10));
            setConnection("no sale open", true);
          } else {
            setConnection("service answered " + code, false);
          }
        });
      })
      .catch(function () { setConnection("service unreachable", false); })
      .then(function () { $("connection").dataset.updated = String(Date.now()); });
  }

  poll();
  tickCountdown();
  setInterval(poll, POLL_MS);
  setInterval(tickCountdown, 250);
})();
