-- Spend per day, server and model, kept up to date by a trigger: the reports over a period read a few rows
-- per day from here instead of grouping every ledger row of the period (over 1,000,000 ledger rows, an
-- all-time report took 0.4-1.6 s that way; from here, 5-30 ms). Reports about users still read the ledger
-- (ledger_by_user): there is no user here, or the table would be nearly as large as the ledger. The price
-- is one more small write per ledger row: 6-8% fewer reservations per second (bench/README.md).
--
-- Each row holds what `bot.store.reports.Spend` needs for the ledger rows with that (day, guild_id, model):
-- the sum and the count of each kind, and of the charges marked unknown (note LIKE 'unknown:%', as the
-- reports have always counted them). Ledger rows are only ever inserted (never updated or deleted: see
-- 0001), so adding each new row here keeps every rollup row equal to the sums over its ledger rows. The
-- migration first fills the table from the rows already there, in the same transaction as the trigger's
-- creation, so an upgraded database is complete (1,000,000 rows: about 2 s).

CREATE TABLE spend_daily (
    day             TEXT    NOT NULL,                     -- ledger.day: the job's UTC day
    guild_id        TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    reserved        INTEGER NOT NULL,                     -- SUM(amount) of the reserve rows
    charged         INTEGER NOT NULL,                     -- ... of the charge rows
    refunded        INTEGER NOT NULL,                     -- ... of the refund rows
    unknown         INTEGER NOT NULL,                     -- ... of the charge rows of jobs whose cost is unknown
    reserves        INTEGER NOT NULL,                     -- how many reserve rows
    charges         INTEGER NOT NULL,
    refunds         INTEGER NOT NULL,
    unknowns        INTEGER NOT NULL,
    PRIMARY KEY (day, guild_id, model)
) WITHOUT ROWID;

INSERT INTO spend_daily (day, guild_id, model, reserved, charged, refunded, unknown,
                         reserves, charges, refunds, unknowns)
SELECT day, guild_id, model,
       SUM(CASE kind WHEN 'reserve' THEN amount ELSE 0 END),
       SUM(CASE kind WHEN 'charge' THEN amount ELSE 0 END),
       SUM(CASE kind WHEN 'refund' THEN amount ELSE 0 END),
       SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN amount ELSE 0 END),
       SUM(kind = 'reserve'),
       SUM(kind = 'charge'),
       SUM(kind = 'refund'),
       SUM(CASE WHEN kind = 'charge' AND note LIKE 'unknown:%' THEN 1 ELSE 0 END)
FROM ledger
GROUP BY day, guild_id, model;

-- One upsert per ledger row, whoever writes it. The columns that do not apply to the row's kind add 0.
CREATE TRIGGER ledger_spend_daily AFTER INSERT ON ledger
BEGIN
    INSERT INTO spend_daily (day, guild_id, model, reserved, charged, refunded, unknown,
                             reserves, charges, refunds, unknowns)
    VALUES (NEW.day, NEW.guild_id, NEW.model,
            CASE NEW.kind WHEN 'reserve' THEN NEW.amount ELSE 0 END,
            CASE NEW.kind WHEN 'charge' THEN NEW.amount ELSE 0 END,
            CASE NEW.kind WHEN 'refund' THEN NEW.amount ELSE 0 END,
            CASE WHEN NEW.kind = 'charge' AND NEW.note LIKE 'unknown:%' THEN NEW.amount ELSE 0 END,
            NEW.kind = 'reserve',
            NEW.kind = 'charge',
            NEW.kind = 'refund',
            CASE WHEN NEW.kind = 'charge' AND NEW.note LIKE 'unknown:%' THEN 1 ELSE 0 END)
    ON CONFLICT (day, guild_id, model) DO UPDATE SET
        reserved = reserved + excluded.reserved,
        charged = charged + excluded.charged,
        refunded = refunded + excluded.refunded,
        unknown = unknown + excluded.unknown,
        reserves = reserves + excluded.reserves,
        charges = charges + excluded.charges,
        refunds = refunds + excluded.refunds,
        unknowns = unknowns + excluded.unknowns;
END;
