-- Easel's first schema: jobs, their images, the append-only spending ledger, budgets and their counters.
-- Money is integer micro-dollars (1 USD = 1,000,000). The money rules live here, in triggers, so that
-- every writer (the bot, the CLI, an admin's script) obeys them:
--   * inserting a job with cost_state 'reserved' writes its 'reserve' ledger row and adds to the
--     counters of every budget that applies, and aborts the whole insert if any of them would go over;
--   * moving cost_state from 'reserved' to 'settled', 'refunded' or 'unknown' writes the matching
--     'charge' and 'refund' rows, exactly once (other transitions are refused);
--   * a job's cost is written once, when it is settled ('unknown' charges the estimate);
--   * ledger rows are never updated or deleted, and only these triggers write them, so each budget's
--     counter always equals the net of the ledger rows of the jobs it covers. (SQLite cannot tell a
--     trigger's INSERT INTO ledger from anyone else's; tests/test_crash.py checks the invariant.)
-- All of a job's ledger rows count in the period (day) the job was created in, so a refund that comes
-- after midnight returns the money to the period that was charged.

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('generate', 'edit', 'vary', 'outpaint')),
    user_id         TEXT    NOT NULL,
    guild_id        TEXT    NOT NULL DEFAULT '',          -- '' outside a server (DMs, the CLI)
    channel_id      TEXT    NOT NULL DEFAULT '',
    roles           TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(roles)),  -- the user's role ids when reserved
    model           TEXT    NOT NULL,
    provider        TEXT    NOT NULL DEFAULT '',
    size            TEXT,
    quality         TEXT,
    n               INTEGER NOT NULL DEFAULT 1 CHECK (n >= 1),
    prompt          TEXT    NOT NULL DEFAULT '',
    revised_prompt  TEXT,
    parent_job      INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    parent_index    INTEGER,
    status          TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'rejected')),
    cost_state      TEXT    NOT NULL DEFAULT 'reserved'
                    CHECK (cost_state IN ('free', 'reserved', 'settled', 'refunded', 'unknown')),
    estimate        INTEGER NOT NULL DEFAULT 0 CHECK (estimate >= 0),
    cost            INTEGER NOT NULL DEFAULT 0 CHECK (cost >= 0),
    credits         REAL,
    error_code      TEXT,
    error_message   TEXT,
    request_id      TEXT,
    created_at      TEXT    NOT NULL,                     -- ISO 8601 UTC, e.g. 2026-11-24T10:00:00.000Z
    started_at      TEXT,
    finished_at     TEXT
);
CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
CREATE INDEX jobs_by_status ON jobs (status) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_by_parent ON jobs (parent_job) WHERE parent_job IS NOT NULL;

CREATE TABLE images (
    job_id          INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL CHECK (idx >= 0),
    sha256          TEXT    NOT NULL,
    path            TEXT,                                 -- in the image store; NULL once cleaned away
    bytes           INTEGER NOT NULL CHECK (bytes >= 0),
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    mime            TEXT    NOT NULL,
    message_id      TEXT,                                 -- set once posted on Discord
    attachment_id   TEXT,
    attachment_url  TEXT,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX images_by_sha ON images (sha256);
CREATE INDEX images_by_message ON images (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE ledger (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('reserve', 'charge', 'refund')),
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    user_id         TEXT    NOT NULL,
    guild_id        TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    at              TEXT    NOT NULL,                     -- when the row was written (ISO 8601 UTC)
    day             TEXT    NOT NULL,                     -- the job's day (YYYY-MM-DD UTC): the period it counts in
    note            TEXT
);
-- Covering indexes for the reports (spend per day, model and guild over a date range; one user's spend)
-- and for a job's own rows. Each index costs every reservation a write, so there are only these three.
CREATE INDEX ledger_by_day ON ledger (day, kind, amount, model, guild_id);
CREATE INDEX ledger_by_user ON ledger (user_id, day, kind, amount);
CREATE INDEX ledger_by_job ON ledger (job_id);

CREATE TABLE budgets (
    id              INTEGER PRIMARY KEY,
    scope           TEXT    NOT NULL CHECK (scope IN ('user', 'role', 'guild', 'global')),
    guild_id        TEXT    NOT NULL DEFAULT '',          -- the server it applies in; '' = everywhere
    target_id       TEXT    NOT NULL DEFAULT '',          -- user or role id; '' on a user budget = each user
    period          TEXT    NOT NULL CHECK (period IN ('day', 'week', 'month', 'all')),
    limit_micros    INTEGER NOT NULL CHECK (limit_micros >= 0),
    created_at      TEXT    NOT NULL,
    UNIQUE (scope, guild_id, target_id, period),
    CHECK (scope <> 'role' OR (guild_id <> '' AND target_id <> '')),
    CHECK (scope <> 'guild' OR (guild_id <> '' AND target_id = guild_id)),
    CHECK (scope <> 'global' OR (guild_id = '' AND target_id = ''))
);

-- Net spend (reserve + charge - refund) per budget, per subject (the user, for user budgets) and period.
-- A reservation writes its row with `enforce` = 1, so the CHECK refuses it when it would pass the limit;
-- charges and refunds write with `enforce` = 0, because money already spent is recorded, never refused.
CREATE TABLE budget_spend (
    budget_id       INTEGER NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    subject         TEXT    NOT NULL,
    period_start    TEXT    NOT NULL,                     -- YYYY-MM-DD, or '' for all-time budgets
    spent           INTEGER NOT NULL,
    limit_micros    INTEGER NOT NULL,                     -- a copy of the budget's limit
    enforce         INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT within_budget CHECK (enforce = 0 OR spent <= limit_micros),
    PRIMARY KEY (budget_id, subject, period_start)
) WITHOUT ROWID;

-- Which budgets apply to which job, with the counter key each one uses. A user's own budget replaces the
-- "each user" default of the same server and period; role budgets are shared by everyone holding the role.
CREATE VIEW job_budgets AS
SELECT j.id AS job_id,
       b.id AS budget_id,
       b.scope AS scope,
       b.period AS period,
       b.limit_micros AS limit_micros,
       CASE b.scope WHEN 'user' THEN j.user_id ELSE '' END AS subject,
       CASE b.period
           WHEN 'day' THEN substr(j.created_at, 1, 10)
           WHEN 'week' THEN date(substr(j.created_at, 1, 10), '-6 days', 'weekday 1')
           WHEN 'month' THEN substr(j.created_at, 1, 8) || '01'
           ELSE ''
       END AS period_start
FROM jobs AS j
JOIN budgets AS b
  ON b.scope = 'global'
  OR (b.scope = 'guild' AND j.guild_id <> '' AND b.guild_id = j.guild_id)
  OR (b.scope = 'role' AND j.guild_id <> '' AND b.guild_id = j.guild_id
      AND b.target_id IN (SELECT value FROM json_each(j.roles)))
  OR (b.scope = 'user' AND (b.guild_id = '' OR b.guild_id = j.guild_id)
      AND (b.target_id = j.user_id
           OR (b.target_id = '' AND NOT EXISTS (
                   SELECT 1 FROM budgets AS own
                   WHERE own.scope = 'user' AND own.guild_id = b.guild_id
                     AND own.period = b.period AND own.target_id = j.user_id))));

-- A reservation writes its ledger row and adds its estimate to the counter of every budget that applies;
-- if any of them would pass its limit, the within_budget CHECK aborts the insert, undoing the job, its
-- ledger row and the counters. Overspending is impossible even with many writers, because SQLite runs
-- one write transaction at a time.
CREATE TRIGGER jobs_reserve AFTER INSERT ON jobs WHEN NEW.cost_state = 'reserved'
BEGIN
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day)
    VALUES (NEW.id, 'reserve', NEW.estimate, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10));
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros, enforce)
    SELECT budget_id, subject, period_start, NEW.estimate, limit_micros, 1
    FROM job_budgets WHERE job_id = NEW.id AND NEW.estimate > 0
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 1;
END;

-- A job starts either free (refused before any money moved) or reserved; the rest follows from there.
CREATE TRIGGER jobs_start_state BEFORE INSERT ON jobs WHEN NEW.cost_state NOT IN ('free', 'reserved') OR NEW.cost <> 0
BEGIN
    SELECT RAISE(ABORT, 'easel: a job starts free or reserved, with no cost yet');
END;

-- Only these cost transitions exist; anything else (settling twice, refunding a settled job) is refused.
CREATE TRIGGER jobs_cost_transition BEFORE UPDATE OF cost_state ON jobs
WHEN OLD.cost_state <> NEW.cost_state
 AND NOT (OLD.cost_state = 'reserved' AND NEW.cost_state IN ('settled', 'refunded', 'unknown'))
BEGIN
    SELECT RAISE(ABORT, 'easel: this job''s cost is already final');
END;

-- An 'unknown' charge is the estimate, and a final cost never changes again: the ledger holds it.
CREATE TRIGGER jobs_cost_fixed BEFORE UPDATE OF cost, cost_state ON jobs
WHEN (NEW.cost_state = 'unknown' AND OLD.cost_state = 'reserved' AND NEW.cost <> OLD.estimate)
  OR (OLD.cost_state <> 'reserved' AND NEW.cost <> OLD.cost)
  OR (NEW.cost_state IN ('reserved', 'refunded') AND NEW.cost <> 0)
BEGIN
    SELECT RAISE(ABORT, 'easel: a job''s cost is set once, when it is settled');
END;

CREATE TRIGGER jobs_money_fixed BEFORE UPDATE OF estimate, user_id, guild_id, roles, created_at ON jobs
WHEN OLD.cost_state <> 'free'
 AND (OLD.estimate <> NEW.estimate OR OLD.user_id <> NEW.user_id OR OLD.guild_id <> NEW.guild_id
      OR OLD.roles <> NEW.roles OR OLD.created_at <> NEW.created_at)
BEGIN
    SELECT RAISE(ABORT, 'easel: a reserved job''s estimate, owner and date cannot change');
END;

-- Settling charges the actual cost and releases the reservation; 'unknown' does the same with the
-- estimate as the cost (the provider may have billed); a refund only releases the reservation.
-- The counters move by the same net amount as the ledger rows written here.
CREATE TRIGGER jobs_settle AFTER UPDATE OF cost_state ON jobs
WHEN OLD.cost_state = 'reserved' AND NEW.cost_state IN ('settled', 'unknown')
BEGIN
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day, note)
    VALUES (NEW.id, 'charge', NEW.cost, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10),
            CASE NEW.cost_state WHEN 'unknown' THEN 'unknown: the provider may have billed' END);
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day)
    VALUES (NEW.id, 'refund', OLD.estimate, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10));
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros)
    SELECT budget_id, subject, period_start, NEW.cost - OLD.estimate, limit_micros FROM job_budgets
    WHERE job_id = NEW.id AND NEW.cost <> OLD.estimate
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 0;
END;

CREATE TRIGGER jobs_refund AFTER UPDATE OF cost_state ON jobs
WHEN OLD.cost_state = 'reserved' AND NEW.cost_state = 'refunded'
BEGIN
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day)
    VALUES (NEW.id, 'refund', OLD.estimate, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10));
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros)
    SELECT budget_id, subject, period_start, -OLD.estimate, limit_micros FROM job_budgets
    WHERE job_id = NEW.id AND OLD.estimate > 0
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 0;
END;

CREATE TRIGGER ledger_append_only_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'easel: ledger rows are never changed');
END;

CREATE TRIGGER ledger_append_only_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'easel: ledger rows are never deleted');
END;

-- A new budget starts from what was already spent in its current periods.
CREATE TRIGGER budgets_backfill AFTER INSERT ON budgets
BEGIN
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros)
    SELECT jb.budget_id, jb.subject, jb.period_start,
           SUM(CASE l.kind WHEN 'refund' THEN -l.amount ELSE l.amount END), NEW.limit_micros
    FROM job_budgets AS jb JOIN ledger AS l ON l.job_id = jb.job_id
    WHERE jb.budget_id = NEW.id
    GROUP BY jb.budget_id, jb.subject, jb.period_start;
END;

-- A new limit applies from the next reservation on; what is already spent stays recorded.
CREATE TRIGGER budgets_limit_changed AFTER UPDATE OF limit_micros ON budgets
BEGIN
    UPDATE budget_spend SET limit_micros = NEW.limit_micros, enforce = 0 WHERE budget_id = NEW.id;
END;

-- What a budget covers is fixed once made (its counters depend on it); change the limit, or delete and add.
CREATE TRIGGER budgets_shape_fixed BEFORE UPDATE OF scope, guild_id, target_id, period ON budgets
BEGIN
    SELECT RAISE(ABORT, 'easel: a budget''s scope and period cannot change');
END;
