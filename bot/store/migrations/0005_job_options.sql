-- The request's other options (style, background, output format and compression, moderation), so a
-- re-roll, a remix and a job resumed after a restart ask for what the member asked for, not the model's
-- defaults. A JSON object of the options that were set; '{}' for jobs from before (their options were not
-- kept) and for jobs that set none. Adding a column with a constant default rewrites nothing.

ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(options) AND json_type(options) = 'object');
