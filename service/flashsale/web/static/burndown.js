// The burn-down of the sale since it opened, drawn as SVG: the service's history of the sale
// (GET /sale/history: the items sold by the end of each bucket since the opening) and the live
// figure of now (GET /sale/status). status.js calls flashsaleBurndown.draw and .clear.
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var W = 720, H = 200, LEFT = 44, RIGHT = 10, TOP = 12, BOTTOM = 24;

  function node(name, attrs, text) {
    var el = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function clock(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }

  function elapsed(ms) {
    var s = Math.max(0, Math.round(ms / 1000)), h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60), ss = s % 60;
    var mm = (h && m < 10 ? "0" : "") + m;
    return "+" + (h ? h + ":" : "") + mm + ":" + (ss < 10 ? "0" : "") + ss;
  }

  // Points (t, sold): none sold at the opening, each bucket's count at its end, and the live
  // figure at `live.t` (else the history's last bucket, so far, at its end).
  function points(history, live) {
    var start = Date.parse(history.starts_at), end = Date.parse(history.ends_at);
    var step = history.bucket_seconds * 1000, sold = history.sold, last = sold.length - 1;
    var pts = [{ t: start, sold: 0 }];
    for (var i = 0; i < last; i++) pts.push({ t: start + (i + 1) * step, sold: sold[i] });
    var at = live ? live.t : start + sold.length * step;
    at = Math.min(end, Math.max(at, pts[pts.length - 1].t + 1));
    pts.push({ t: at, sold: live ? live.sold : sold[last] });
    return pts;
  }

  function draw(svg, history, live) {
    var pts = points(history, live), total = Math.max(1, history.total_items);
    var t0 = pts[0].t, t1 = pts[pts.length - 1].t;
    var x = function (t) { return LEFT + (W - LEFT - RIGHT) * (t - t0) / (t1 - t0); };
    var y = function (v) { return TOP + (H - TOP - BOTTOM) * (1 - v / total); };
    var remaining = pts.map(function (p) { return x(p.t).toFixed(1) + "," + y(total - p.sold).toFixed(1); });
    var sold = pts.map(function (p) { return x(p.t).toFixed(1) + "," + y(p.sold).toFixed(1); });

    svg.textContent = "";
    svg.appendChild(node("line", { x1: LEFT, x2: W - RIGHT, y1: y(total), y2: y(total), "class": "grid" }));
    svg.appendChild(node("line", { x1: LEFT, x2: W - RIGHT, y1: y(0), y2: y(0), "class": "grid" }));
    svg.appendChild(node("path", {
      d: "M" + remaining.join(" L") + " L" + x(t1).toFixed(1) + "," + y(0) + " L" + x(t0) + "," + y(0) + " Z",
      "class": "remaining-area"
    }));
    svg.appendChild(node("polyline", { points: remaining.join(" "), "class": "remaining", id: "burndown-remaining" }));
    svg.appendChild(node("polyline", { points: sold.join(" "), "class": "sold", id: "burndown-sold" }));
    svg.appendChild(node("text", { x: LEFT - 6, y: y(total) + 4, "class": "axis", "text-anchor": "end" }, String(total)));
    svg.appendChild(node("text", { x: LEFT - 6, y: y(0) + 4, "class": "axis", "text-anchor": "end" }, "0"));
    svg.appendChild(node("text", { x: LEFT, y: H - 6, "class": "axis" }, "opened " + clock(t0) + "Z"));
    svg.appendChild(node("text", { x: W - RIGHT, y: H - 6, "class": "axis", "text-anchor": "end" },
                         "now " + elapsed(t1 - t0)));
    // What is drawn, for tests and curious readers: the first point is the sale's opening.
    svg.dataset.saleId = history.sale_id;
    svg.dataset.from = history.starts_at;
    svg.dataset.sold = JSON.stringify(pts.map(function (p) { return p.sold; }));
  }

  function clear(svg) {
    svg.textContent = "";
    delete svg.dataset.saleId;
    delete svg.dataset.from;
    delete svg.dataset.sold;
  }

  window.flashsaleBurndown = { draw: draw, clear: clear };
})();
