-- A sale may be spread over several Redis shards (FLASHSALE_REDIS_SHARDS), recorded when it
-- opens and never changed: every pod, job and restore finds the same layout here.
ALTER TABLE sales ADD COLUMN shards integer NOT NULL DEFAULT 1 CHECK (shards >= 1);
-- The hash tags of the shards (K > 1): chosen at opening so that, on a Redis Cluster, they land
-- on distinct primaries. Empty for a sale on one hash tag.
ALTER TABLE sales ADD COLUMN shard_tags text[] NOT NULL DEFAULT '{}';
