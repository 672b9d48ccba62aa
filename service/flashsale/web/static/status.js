// The status page: polls GET /sale/status every second and GET /sale/items once per sale, and
// counts down to the next sale from `ends_at` (the next sale opens when the current one ends).
// Plain JavaScript, no build step. Every number shown comes from the JSON endpoints.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var ITEMS_SHOWN = 24;
  var HISTORY = 600; // burn-down points kept (10 minutes at one a second)

  var $ = function (id) { return document.getElementById(id); };
  var state = { saleId: null, endsAt: null, retryAt: null, history: [], itemsFor: null };

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
      state.history = [];
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
    state.history.push({ t: Date.now(), sold: s.items_sold, reserved: s.items_reserved,
                         total: s.total_items });
    if (state.history.length > HISTORY) state.history.shift();
    drawBurndown();
    tickCountdown();
    if (state.itemsFor !== s.sale_id) loadItems(s.sale_id);
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
    tickCountdown();
  }

  function tickCountdown() {
    var target = state.endsAt || state.retryAt;
    $("countdown").textContent = target ? fmtCountdown(target - Date.now()) : "--:--";
  }

  function drawBurndown() {
    var canvas = $("burndown"), ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height, pts = state.history;
    ctx.clearRect(0, 0, w, h);
    if (!pts.length) return;
    var total = Math.max(1, pts[pts.length - 1].total);
    var t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
    var x = function (t) { return 4 + (w - 8) * (t - t0) / (t1 - t0); };
    var y = function (v) { return h - 4 - (h - 8) * v / total; };
    var css = getComputedStyle(document.documentElement);
    function line(value, color) {
      ctx.beginPath();
      pts.forEach(function (p, i) {
        var px = pts.length === 1 ? w - 4 : x(p.t), py = y(value(p));
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.stroke();
    }
    ctx.strokeStyle = "#e3e6ea";
    ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(w, y(0)); ctx.stroke();
    ctx.fillStyle = "#6a7380";
    ctx.font = "11px sans-serif";
    ctx.fillText(String(total), 8, 16);
    ctx.fillText("0", 8, h - 8);
    line(function (p) { return p.total - p.sold - p.reserved; }, css.getPropertyValue("--available"));
    line(function (p) { return p.sold; }, css.getPropertyValue("--sold"));
    line(function (p) { return p.reserved; }, css.getPropertyValue("--reserved"));
  }

  function loadItems(saleId) {
    state.itemsFor = saleId;
    fetch("sale/items?limit=" + ITEMS_SHOWN, { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (page) {
        var list = $("item-list");
        list.textContent = "";
        page.items.forEach(function (item) {
          var li = document.createElement("li"), img = document.createElement("img");
          img.src = item.image_url;
          img.alt = item.name;
          img.loading = "lazy";
          li.appendChild(img);
          li.appendChild(document.createTextNode(item.name));
          li.dataset.itemId = item.id;
          list.appendChild(li);
        });
        $("items-count").textContent = "(first " + page.items.length + ")";
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
