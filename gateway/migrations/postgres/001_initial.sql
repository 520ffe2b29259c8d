-- The gateway cluster's store (docs/gateway.md, "Cluster"): queue, bodies, Message-ID
-- reservations, the archive chain with its head row, billing and access records.
-- Applied once by the first node that starts, under an advisory lock (src/pg.rs).

-- Queue: one row per accepted message (envelope as the spool's JSON, the exact bytes) …
CREATE TABLE messages (
    id          text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('provider', 'internal')),
    meta        text NOT NULL,
    body        bytea NOT NULL,
    accepted_by text NOT NULL,
    created     timestamptz NOT NULL DEFAULT now()
);

-- … and one per recipient: its state, when it is due, and who holds it under which lease.
CREATE TABLE recipients (
    message_id  text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    rcpt        text NOT NULL,
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivered', 'bounced')),
    due_at      timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    held        boolean NOT NULL DEFAULT false,
    -- DATA was started and no answer recorded (a diagnosis: the provider may hold it).
    sending     boolean NOT NULL DEFAULT false,
    lease_owner text,
    lease_until timestamptz,
    -- Unique per claim (sequence below): every write after a claim names it (fencing).
    lease_epoch bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, rcpt)
);
CREATE INDEX recipients_due ON recipients (due_at) WHERE state = 'queued' AND NOT held;
CREATE SEQUENCE lease_epochs;

-- One acceptance per (Message-ID, sender): written in the accepting transaction.
CREATE TABLE reservations (
    message_id text NOT NULL,
    sender     text NOT NULL,
    queue_id   text NOT NULL,
    time       bigint NOT NULL,
    PRIMARY KEY (message_id, sender)
);

CREATE TABLE accepted (
    queue_id   text PRIMARY KEY,
    message_id text,
    sender     text NOT NULL,
    time       bigint NOT NULL
);

-- The archive: one hash chain for all nodes. seq and prev_hash unique: no fork, even
-- with a bug in a writer.
CREATE TABLE entries (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    time       bigint NOT NULL,
    direction  text NOT NULL,
    private_id text,
    message_id text,
    sender     text NOT NULL,
    recipients text NOT NULL,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    link       bigint,
    prev_hash  text NOT NULL UNIQUE,
    hash       text NOT NULL UNIQUE,
    data       bytea NOT NULL,
    actor      text
);
CREATE INDEX entries_sent ON entries (private_id, seq) WHERE direction = 'out';

-- The newest (seq, hash): locked as the last statement of every appending transaction,
-- so chain order is commit order. It only moves forward, and only onto its entry.
CREATE TABLE archive_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO archive_head VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION archive_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'archive is append-only';
END $$;
CREATE TRIGGER entries_no_change BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION archive_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION archive_append_only();
CREATE TRIGGER head_no_delete BEFORE DELETE ON archive_head
    FOR EACH ROW EXECUTE FUNCTION archive_append_only();
CREATE TRIGGER head_no_truncate BEFORE TRUNCATE ON archive_head
    FOR EACH STATEMENT EXECUTE FUNCTION archive_append_only();

CREATE FUNCTION archive_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <= OLD.seq
       OR NOT EXISTS (SELECT 1 FROM entries WHERE seq = NEW.seq AND hash = NEW.hash) THEN
        RAISE EXCEPTION 'archive head moves forward onto its entry only';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER head_forward BEFORE UPDATE ON archive_head
    FOR EACH ROW EXECUTE FUNCTION archive_head_forward();

-- Billing: one row per message, recipient and event ('accepted', 'delivered').
CREATE TABLE billing (
    id         bigserial PRIMARY KEY,
    time       bigint NOT NULL,
    queue_id   text NOT NULL,
    recipient  text NOT NULL,
    event      text NOT NULL CHECK (event IN ('accepted', 'delivered')),
    sender     text NOT NULL,
    cost_unit  text NOT NULL,
    options    text NOT NULL,
    person     text NOT NULL DEFAULT '',
    UNIQUE (queue_id, recipient, event)
);
CREATE INDEX billing_time ON billing (time);

CREATE TABLE access (
    dn    text PRIMARY KEY,
    login text NOT NULL,
    name  text NOT NULL,
    state text NOT NULL,
    time  bigint NOT NULL,
    "by"  text NOT NULL
);
