-- The publication the indexer streams (config: source.publication). Idempotent. The default
-- replica identity (the primary key) is what the indexer needs: deletes carry the key, and
-- unchanged TOASTed values keep what the index already holds.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'search_pub') THEN
        CREATE PUBLICATION search_pub FOR TABLE places;
    END IF;
END
$$;
