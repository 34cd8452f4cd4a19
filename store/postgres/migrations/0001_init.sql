-- trackrelay's PostgreSQL schema, version 1. Ids are the store's 64-bit
-- ids as bigint; times that must keep nanoseconds are Unix nanoseconds
-- (bigint). Text compared or ordered as bbolt orders keys uses COLLATE "C".
-- Values kept exactly as the Go side wrote them are bytea (JSON).

CREATE TABLE meta (
    name text COLLATE "C" PRIMARY KEY,
    n bigint NOT NULL DEFAULT 0
);
INSERT INTO meta (name, n) VALUES ('records_version', 0);

-- One row per relay node name; num goes into every id the node makes.
-- A running node holds a session advisory lock on its num.
CREATE TABLE nodes (
    num int PRIMARY KEY CHECK (num BETWEEN 1 AND 255),
    name text COLLATE "C" NOT NULL UNIQUE,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_started timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE records (
    kind text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_account ON records (kind, account, key);

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    account text COLLATE "C" NOT NULL,
    node text COLLATE "C" NOT NULL,
    spool text NOT NULL,
    remaining int NOT NULL,
    subject text NOT NULL,
    sender text NOT NULL,
    header_from text NOT NULL,
    tags text[] NOT NULL,
    recipients text[] NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX messages_account ON messages (account, id);
CREATE INDEX messages_spool ON messages (node) WHERE remaining > 0;

CREATE TABLE copies (
    id bigint PRIMARY KEY,
    message bigint NOT NULL,
    account text COLLATE "C" NOT NULL,
    recipient text NOT NULL,
    queued boolean NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX copies_queued ON copies (message) WHERE queued;

-- The event logs, partitioned by day of t (Unix ns, UTC): one partition
-- events_pYYYYMMDD per day, made ahead and on demand, dropped whole by
-- retention when every account's period allows.
CREATE SEQUENCE events_seq;
CREATE TABLE events (
    t bigint NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('events_seq'),
    account text COLLATE "C" NOT NULL,
    log text COLLATE "C" NOT NULL,
    id bigint NOT NULL,
    recipient text NOT NULL,
    rcpt text COLLATE "C" NOT NULL,
    tags text[] NOT NULL,
    fields bytea NOT NULL,
    key bytea
) PARTITION BY RANGE (t);
CREATE INDEX events_log ON events (account, log, t, seq);
CREATE INDEX events_msg ON events (account, id, t, seq);
CREATE INDEX events_rcpt ON events (account, rcpt, t, seq);
CREATE INDEX events_tags ON events USING gin (tags);

-- Idempotency keys of events appended with a Key (hits use hit_ids).
CREATE TABLE event_keys (
    account text COLLATE "C" NOT NULL,
    log text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    t bigint NOT NULL,
    PRIMARY KEY (account, log, key)
);

-- Counters are split over a few shards per key (each transaction picks
-- one), so writers on several nodes do not queue on one hot row; readers
-- add the shards up.
CREATE TABLE event_days (
    account text COLLATE "C" NOT NULL,
    day text COLLATE "C" NOT NULL,
    log text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (account, day, log, shard)
);

CREATE TABLE agg (
    account text COLLATE "C" NOT NULL,
    dim text COLLATE "C" NOT NULL,
    hour int NOT NULL,
    shard smallint NOT NULL,
    accepted bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    deferred bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    bounced_hard bigint NOT NULL DEFAULT 0,
    bounced_soft bigint NOT NULL DEFAULT 0,
    delayed bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    responded bigint NOT NULL DEFAULT 0,
    opens bigint NOT NULL DEFAULT 0,
    unique_opens bigint NOT NULL DEFAULT 0,
    machine_opens bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    unique_clicks bigint NOT NULL DEFAULT 0,
    machine_clicks bigint NOT NULL DEFAULT 0,
    suppressed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, dim, hour, shard)
);
CREATE TABLE totals (
    account text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    accepted bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    deferred bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    bounced_hard bigint NOT NULL DEFAULT 0,
    bounced_soft bigint NOT NULL DEFAULT 0,
    delayed bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    responded bigint NOT NULL DEFAULT 0,
    opens bigint NOT NULL DEFAULT 0,
    unique_opens bigint NOT NULL DEFAULT 0,
    machine_opens bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    unique_clicks bigint NOT NULL DEFAULT 0,
    machine_clicks bigint NOT NULL DEFAULT 0,
    suppressed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, shard)
);
CREATE TABLE msg_stats (
    message bigint PRIMARY KEY,
    accepted bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    deferred bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    bounced_hard bigint NOT NULL DEFAULT 0,
    bounced_soft bigint NOT NULL DEFAULT 0,
    delayed bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    responded bigint NOT NULL DEFAULT 0,
    opens bigint NOT NULL DEFAULT 0,
    unique_opens bigint NOT NULL DEFAULT 0,
    machine_opens bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    unique_clicks bigint NOT NULL DEFAULT 0,
    machine_clicks bigint NOT NULL DEFAULT 0,
    suppressed bigint NOT NULL DEFAULT 0
);
CREATE TABLE link_days (
    account text COLLATE "C" NOT NULL,
    dim text COLLATE "C" NOT NULL,
    day int NOT NULL,
    link text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    clicks bigint NOT NULL,
    uniq bigint NOT NULL,
    machine bigint NOT NULL,
    first bigint,
    last bigint,
    PRIMARY KEY (account, dim, day, link, shard)
);
CREATE TABLE link_names (
    account text COLLATE "C" NOT NULL,
    link text COLLATE "C" NOT NULL,
    url text NOT NULL,
    PRIMARY KEY (account, link)
);
CREATE TABLE link_msgs (
    account text COLLATE "C" NOT NULL,
    link text COLLATE "C" NOT NULL,
    message bigint NOT NULL,
    PRIMARY KEY (account, link, message)
);
CREATE TABLE msg_links (
    message bigint NOT NULL,
    position int NOT NULL,
    url text NOT NULL,
    PRIMARY KEY (message, position)
);
CREATE TABLE msg_link_stats (
    message bigint NOT NULL,
    position int NOT NULL,
    clicks bigint NOT NULL,
    uniq bigint NOT NULL,
    machine bigint NOT NULL,
    first bigint,
    last bigint,
    PRIMARY KEY (message, position)
);
-- A copy's first human open ('o'), first human click ('k'), first human
-- click on one link position ('c<pos>') or, position unknown, URL ('u<link>').
CREATE TABLE hit_uniq (
    copy bigint NOT NULL,
    k text COLLATE "C" NOT NULL,
    PRIMARY KEY (copy, k)
);
-- Every hit once, across nodes: the dedup set. Joined hits name their
-- event's account and log; orphans (no known copy) keep the raw hit.
CREATE TABLE hit_ids (
    id bytea PRIMARY KEY,
    t bigint NOT NULL,
    account text COLLATE "C",
    log text COLLATE "C",
    orphan bytea
);
CREATE INDEX hit_ids_t ON hit_ids (t);
CREATE TABLE counters (
    name text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (name, shard)
);

CREATE TABLE addr_lists (
    list text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    address text COLLATE "C" NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (list, account, address)
);

CREATE TABLE wh_msgs (
    id text COLLATE "C" PRIMARY KEY,
    endpoint text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    type text NOT NULL,
    payload bytea NOT NULL,
    created bigint NOT NULL,
    attempts int NOT NULL,
    next_attempt bigint NOT NULL,
    state text NOT NULL,
    last_status int NOT NULL,
    last_error text NOT NULL,
    recipient text COLLATE "C" NOT NULL
);
CREATE INDEX wh_due ON wh_msgs (next_attempt, id) WHERE state = 'pending';
CREATE INDEX wh_endpoint ON wh_msgs (endpoint, id);
CREATE INDEX wh_recipient ON wh_msgs (account, recipient);
CREATE TABLE wh_attempts (
    message text COLLATE "C" NOT NULL,
    n int NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (message, n)
);
