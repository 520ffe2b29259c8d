-- Signed checkpoints of the archive chain (docs/gateway.md, "Archive"): whichever node
-- makes one first stores it; never changed or removed, a time stamp is added once.
CREATE TABLE checkpoints (
    seq       bigint PRIMARY KEY REFERENCES entries (seq),
    hash      text NOT NULL,
    from_seq  bigint NOT NULL CHECK (from_seq > 0 AND from_seq <= seq),
    hashes    bytea NOT NULL,
    time      bigint NOT NULL,
    kid       text NOT NULL,
    signature text NOT NULL,
    timestamp bytea
);

CREATE FUNCTION checkpoint_stamp_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.timestamp IS NOT NULL OR (NEW.seq, NEW.hash, NEW.from_seq, NEW.hashes, NEW.time, NEW.kid, NEW.signature)
        IS DISTINCT FROM (OLD.seq, OLD.hash, OLD.from_seq, OLD.hashes, OLD.time, OLD.kid, OLD.signature) THEN
        RAISE EXCEPTION 'checkpoints are append-only';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER checkpoints_stamp_once BEFORE UPDATE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoint_stamp_once();
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION archive_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION archive_append_only();
