-- Flags: a member marks a result as inappropriate (the 🚩 reaction). One flag per member and job, so a
-- member flagging twice changes nothing; the moderation workflow (cases, review, actions) reads from here.
-- A job's flags go with the job (ON DELETE CASCADE), as its images do.

CREATE TABLE flags (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    message_id      TEXT    NOT NULL DEFAULT '',          -- the Discord message flagged ('' when not known)
    channel_id      TEXT    NOT NULL DEFAULT '',
    guild_id        TEXT    NOT NULL DEFAULT '',          -- '' outside a server
    user_id         TEXT    NOT NULL,                     -- who flagged it
    reason          TEXT    NOT NULL DEFAULT '',
    created_at      TEXT    NOT NULL,                     -- ISO 8601 UTC
    UNIQUE (job_id, user_id)
);
CREATE INDEX flags_by_guild ON flags (guild_id, created_at);
