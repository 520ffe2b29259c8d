-- Message bytes compressed with LZ4 instead of pglz: several times faster on the write
-- path (every acceptance stores a body twice: queue and archive), a little larger on disk.
-- A server built without LZ4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE entries ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'LZ4 not available: message bytes stay compressed with pglz';
END $$;
