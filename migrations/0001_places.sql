-- The demo schema: one row per place. Idempotent.
CREATE TABLE IF NOT EXISTS places (
    id          bigint PRIMARY KEY,
    region      text NOT NULL,
    name        text NOT NULL,
    body        text,
    population  bigint,
    country_code text,
    lat         double precision,
    lon         double precision,
    embedding   real[]
);
