-- Which budget counters each job was reserved against, so that settling or refunding it moves exactly those.
--
-- Until now the settle and refund triggers asked the job_budgets view again when the job ended. A budget
-- added or removed while a job was in flight then moved counters the reservation never touched: a
-- member's own budget removed while three of their jobs waited sent the three refunds to the "each user"
-- default's counter (which had never been charged; it went negative, and four more jobs fitted under a
-- $1 budget), and one added meanwhile left the default's counter charged for ever. Now the reservation
-- writes down its counters (one row per budget that applied), the end of the job moves only those, and
-- a budget made while jobs are in flight takes them on (its backfill counts their reservations, so their
-- end must reach it too). A budget's removal takes its rows with it (a trigger: budget ids can be reused).
--
-- The price on the write path is one more row per budget that applies to a reservation (none without
-- budgets), deleted again when the job ends: bench/ledger.py --quick, two interleaved rounds with three
-- budgets, 1,236 / 1,122 pairs a second for one coroutine against 1,275 / 1,250 without this migration,
-- and within the noise at 64 and 256.

CREATE TABLE job_reservations (
    job_id          INTEGER NOT NULL,
    budget_id       INTEGER NOT NULL,
    subject         TEXT    NOT NULL,
    period_start    TEXT    NOT NULL,
    PRIMARY KEY (job_id, budget_id)
) WITHOUT ROWID;

CREATE TRIGGER budgets_removed AFTER DELETE ON budgets
BEGIN
    DELETE FROM job_reservations WHERE budget_id = OLD.id;
END;

-- The jobs in flight now were reserved against what job_budgets says today.
INSERT INTO job_reservations (job_id, budget_id, subject, period_start)
SELECT jb.job_id, jb.budget_id, jb.subject, jb.period_start
FROM job_budgets AS jb JOIN jobs AS j ON j.id = jb.job_id
WHERE j.cost_state = 'reserved';

DROP TRIGGER jobs_reserve;
CREATE TRIGGER jobs_reserve AFTER INSERT ON jobs WHEN NEW.cost_state = 'reserved'
BEGIN
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day)
    VALUES (NEW.id, 'reserve', NEW.estimate, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10));
    INSERT INTO job_reservations (job_id, budget_id, subject, period_start)
    SELECT job_id, budget_id, subject, period_start FROM job_budgets WHERE job_id = NEW.id;
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros, enforce)
    SELECT r.budget_id, r.subject, r.period_start, NEW.estimate, b.limit_micros, 1
    FROM job_reservations AS r JOIN budgets AS b ON b.id = r.budget_id
    WHERE r.job_id = NEW.id AND NEW.estimate > 0
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 1;
END;

DROP TRIGGER jobs_settle;
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
    SELECT r.budget_id, r.subject, r.period_start, NEW.cost - OLD.estimate, b.limit_micros
    FROM job_reservations AS r JOIN budgets AS b ON b.id = r.budget_id
    WHERE r.job_id = NEW.id AND NEW.cost <> OLD.estimate
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 0;
    DELETE FROM job_reservations WHERE job_id = NEW.id;
END;

DROP TRIGGER jobs_refund;
CREATE TRIGGER jobs_refund AFTER UPDATE OF cost_state ON jobs
WHEN OLD.cost_state = 'reserved' AND NEW.cost_state = 'refunded'
BEGIN
    INSERT INTO ledger (job_id, kind, amount, user_id, guild_id, model, at, day)
    VALUES (NEW.id, 'refund', OLD.estimate, NEW.user_id, NEW.guild_id, NEW.model,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), substr(NEW.created_at, 1, 10));
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros)
    SELECT r.budget_id, r.subject, r.period_start, -OLD.estimate, b.limit_micros
    FROM job_reservations AS r JOIN budgets AS b ON b.id = r.budget_id
    WHERE r.job_id = NEW.id AND OLD.estimate > 0
    ON CONFLICT (budget_id, subject, period_start) DO UPDATE SET spent = spent + excluded.spent, enforce = 0;
    DELETE FROM job_reservations WHERE job_id = NEW.id;
END;

-- A new budget starts from what was already spent in its current periods, and the jobs in flight that it
-- covers count against it from now on (their reservations are in that sum; their end must reach it).
DROP TRIGGER budgets_backfill;
CREATE TRIGGER budgets_backfill AFTER INSERT ON budgets
BEGIN
    INSERT INTO budget_spend (budget_id, subject, period_start, spent, limit_micros)
    SELECT jb.budget_id, jb.subject, jb.period_start,
           SUM(CASE l.kind WHEN 'refund' THEN -l.amount ELSE l.amount END), NEW.limit_micros
    FROM job_budgets AS jb JOIN ledger AS l ON l.job_id = jb.job_id
    WHERE jb.budget_id = NEW.id
    GROUP BY jb.budget_id, jb.subject, jb.period_start;
    INSERT INTO job_reservations (job_id, budget_id, subject, period_start)
    SELECT jb.job_id, jb.budget_id, jb.subject, jb.period_start
    FROM job_budgets AS jb JOIN jobs AS j ON j.id = jb.job_id
    WHERE jb.budget_id = NEW.id AND j.cost_state = 'reserved';
END;
