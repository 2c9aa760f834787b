-- A dead letter is the same one only if the bytes are the same too: a broker that starts empty
-- (garda dev) hands out offsets again, and new bad input at an old offset must not vanish.
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS digest text NOT NULL DEFAULT '';
ALTER TABLE deadletters DROP CONSTRAINT IF EXISTS deadletters_topic_partition_offset_key;
CREATE UNIQUE INDEX IF NOT EXISTS deadletters_record_idx
    ON deadletters (topic, partition, "offset", digest);
