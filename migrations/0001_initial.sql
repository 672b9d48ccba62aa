-- The system of record of every sale. Redis holds the live sale; these rows are the truth after it.

CREATE TABLE sales (
    sale_id      text PRIMARY KEY,                -- "<UTC start>-<period>", unique across periods
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    total_items  integer NOT NULL CHECK (total_items > 0),
    user_limit   integer NOT NULL CHECK (user_limit > 0),
    seed         text NOT NULL,                   -- item names and images are derived from it
    created_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,                     -- set once the sale ended and its records settled
    items_sold   integer,                         -- final figures, recorded at close
    CHECK (ends_at > starts_at)
);

CREATE TABLE items (
    sale_id    text NOT NULL REFERENCES sales (sale_id) ON DELETE CASCADE,
    item_id    text NOT NULL,
    position   integer NOT NULL,                  -- listing order for /sale/items
    name       text NOT NULL,
    image_url  text NOT NULL,                     -- served by the service itself
    PRIMARY KEY (sale_id, item_id)
);

CREATE TABLE checkout_attempts (
    id           bigserial PRIMARY KEY,
    attempt_key  text NOT NULL UNIQUE,            -- idempotency key: a re-drain never duplicates
    sale_id      text,                            -- NULL when no sale was open
    user_id      text,                            -- NULL when the parameter was missing
    item_id      text,
    outcome      text NOT NULL,                   -- 'ok' or the error code of the response
    code         text,
    created_at   timestamptz NOT NULL,            -- when the request was decided
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkout_attempts_sale_outcome ON checkout_attempts (sale_id, outcome);
CREATE INDEX checkout_attempts_code ON checkout_attempts (code) WHERE code IS NOT NULL;

CREATE TABLE purchases (
    sale_id       text NOT NULL,
    item_id       text NOT NULL,
    user_id       text NOT NULL,
    code          text NOT NULL UNIQUE,
    purchased_at  timestamptz NOT NULL,
    CONSTRAINT purchases_one_per_item UNIQUE (sale_id, item_id),   -- the last guard against oversell
    FOREIGN KEY (sale_id, item_id) REFERENCES items (sale_id, item_id)
);
CREATE INDEX purchases_sale_user ON purchases (sale_id, user_id);
