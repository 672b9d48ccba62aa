// flashsale.js: the sale crowd for k6 (https://k6.io), the same shape as load/locustfile.py.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=500 -e DURATION=60s load/k6/flashsale.js
//
// setup() reads every item id of the current sale from /sale/items (page by page). Each virtual
// user is one shopper with its own user_id: checkout a random item; abandon it with probability
// ABANDON (default 0.33), else think and purchase; think up to THINK_MS (default 100) between
// steps; stop after hearing sold_out; a shopper at the limit is replaced by a new one. Outcomes are counted per code (checkout_outcomes,
// purchase_outcomes, tagged by outcome); the answers the contract defines (409, 403, 429, ...)
// are correct responses, not failures. Thresholds: checkout p(99) < 50 ms, no unexpected answers.
// k6 is not installed on the project's machines; this script was checked for syntax only.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const ABANDON = parseFloat(__ENV.ABANDON || '0.33');
const THINK_S = parseFloat(__ENV.THINK_MS || '100') / 1000;
const EXPECTED = ['ok', 'item_unavailable', 'user_limit_reached', 'sold_out', 'rate_limited',
                  'code_expired', 'no_active_sale'];

const checkoutOutcomes = new Counter('checkout_outcomes');
const purchaseOutcomes = new Counter('purchase_outcomes');
const unexpected = new Counter('unexpected_answers');

// Non-2xx answers of the contract are expected: keep http_req_failed for the others.
http.setResponseCallback(http.expectedStatuses(200, 403, 404, 409, 410, 429));

export const options = {
  scenarios: {
    crowd: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '500', 10),
      duration: __ENV.DURATION || '60s',
      gracefulStop: '5s',
    },
  },
  thresholds: {
    'http_req_duration{name:checkout}': ['p(99)<50'],
    unexpected_answers: ['count==0'],
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  const ids = [];
  let cursor = '';
  for (;;) {
    const url = `${BASE}/sale/items?limit=1000${cursor ? `&cursor=${cursor}` : ''}`;
    const page = http.get(url, { tags: { name: 'items' } }).json();
    for (const item of page.items) ids.push(item.id);
    if (!page.next_cursor) return { ids };
    cursor = page.next_cursor;
  }
}

function outcomeOf(res) {
  if (res.status === 200) return 'ok';
  try {
    return res.json().error.code;
  } catch (e) {
    return `http_${res.status}`;
  }
}

function think() {
  sleep(Math.random() * THINK_S);
}

let generation = 0;  // per VU: a new shopper after the previous one reached the limit

export default function (data) {
  const user = `k6-${exec.vu.idInTest}-${generation}`;
  const item = data.ids[Math.floor(Math.random() * data.ids.length)];
  const res = http.post(`${BASE}/checkout?user_id=${user}&id=${item}`, null,
                        { tags: { name: 'checkout' } });
  const outcome = outcomeOf(res);
  checkoutOutcomes.add(1, { outcome });
  check(res, { 'checkout answer is in the contract': () => EXPECTED.includes(outcome) })
    || unexpected.add(1, { outcome });
  if (outcome === 'sold_out') {
    exec.test.abort('sold out');  // the sale is over for everyone
  }
  if (outcome === 'user_limit_reached') {
    generation += 1;  // this shopper is done; the next iteration is a new one
  }
  if (outcome === 'ok' && Math.random() >= ABANDON) {
    think();
    const code = res.json().code;
    const paid = http.post(`${BASE}/purchase?code=${encodeURIComponent(code)}`, null,
                           { tags: { name: 'purchase' } });
    const result = outcomeOf(paid);
    purchaseOutcomes.add(1, { outcome: result });
    check(paid, { 'purchase answer is in the contract': () => EXPECTED.includes(result) })
      || unexpected.add(1, { outcome: result });
  }
  think();
}
