-- Spend per user, server and day, kept up to date by a trigger like spend_daily's (0002): the rankings of
-- users read one row per user, server and day from here instead of every ledger row of the period (over
-- 1,000,000 ledger rows, the all-time top users took 230-450 ms from ledger_by_user / ledger_by_day).
-- There is no model column: the rankings do not need one, and each row then covers all of a user's jobs
-- in one server on one day (bench/reports.py's 1,000,000 ledger rows make 344,596 rows here).
--
-- The columns are spend_daily's, with the same meaning (see bot.store.reports.Spend); ledger rows are only
-- ever inserted, so adding each new one here keeps every row equal to the sums over its ledger rows. The
-- migration fills the table from the rows already there, in the same transaction as the trigger's creation
-- (1,000,000 ledger rows: about 8 s on a busy 2-CPU machine). The price on the write path is one more
-- upsert per ledger row: about 8% fewer reservations per second through Ledger (bench/ledger.py --schema 3).

CREATE TABLE spend_by_user (
    user_id         TEXT    NOT NULL,
    guild_id        TEXT    NOT NULL,
    day             TEXT    NOT NULL,                     -- ledger.day: the job's UTC day
    reserved        INTEGER NOT NULL,
    charged         INTEGER NOT NULL,
    refunded        INTEGER NOT NULL,
    unknown         INTEGER NOT NULL,
    reserves        INTEGER NOT NULL,
    charges         INTEGER NOT NULL,
    refunds         INTEGER NOT NULL,
    unknowns        INTEGER NOT NULL,
    PRIMARY KEY (user_id, guild_id, day)
) WITHOUT ROWID;

INSERT INTO spend_by_user (user_id, guild_id, day, reserved, charged, refunded, unknown,
                           reserves, charges, refunds, unknowns)
SELECT user_id, guild_id, day,
       SUM(CASE kind WHEN 'reserve' THEN amount ELSE 0 END),
       SUM(CASE kind WHEN 'charge' THEN amount ELSE 0 END),
       SUM(CASE kind WHEN 'refund' THEN amount ELSE 0 END),
       SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN amount ELSE 0 END),
       SUM(kind = 'reserve'),
       SUM(kind = 'charge'),
       SUM(kind = 'refund'),
       SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN 1 ELSE 0 END)
FROM ledger
GROUP BY user_id, guild_id, day;

CREATE TRIGGER ledger_spend_by_user AFTER INSERT ON ledger
BEGIN
    INSERT INTO spend_by_user (user_id, guild_id, day, reserved, charged, refunded, unknown,
                               reserves, charges, refunds, unknowns)
    VALUES (NEW.user_id, NEW.guild_id, NEW.day,
            CASE NEW.kind WHEN 'reserve' THEN NEW.amount ELSE 0 END,
            CASE NEW.kind WHEN 'charge' THEN NEW.amount ELSE 0 END,
            CASE NEW.kind WHEN 'refund' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.kind = 'charge' AND NEW.note LIKE 'unknown:%' THEN NEW.amount ELSE 0 END,
            NEW.kind = 'reserve',
            NEW.kind = 'charge',
            NEW.kind = 'refund',
            CASE WHEN NEW.kind = 'charge' AND NEW.note LIKE 'unknown:%' THEN 1 ELSE 0 END)
    ON CONFLICT (user_id, guild_id, day) DO UPDATE SET
        reserved = reserved + excluded.reserved,
        charged = charged + excluded.charged,
        refunded = refunded + excluded.refunded,
        unknown = unknown + excluded.unknown,
        reserves = reserves + excluded.reserves,
        charges = charges + excluded.charges,
        refunds = refunds + excluded.refunds,
        unknowns = unknowns + excluded.unknowns;
END;
