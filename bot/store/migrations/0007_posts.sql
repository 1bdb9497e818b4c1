-- Every Discord message an image was posted in, so a message's reactions find its own images however often
-- they were posted again.
--
-- images.message_id holds one message per image: where Discord keeps its latest copy, for fetching it back.
-- The U buttons post an image again, alone, and that moved it off the result it came from: the result's
-- 🚩 then found nothing to flag, its 🗑️ nothing to delete, and its 1️⃣ varied the next image. Each post
-- now also gets its rows here, and a message's images are read from here, in order.

CREATE TABLE posts (
    message_id      TEXT    NOT NULL,
    job_id          INTEGER NOT NULL,
    idx             INTEGER NOT NULL,
    PRIMARY KEY (message_id, job_id, idx)
) WITHOUT ROWID;

INSERT INTO posts (message_id, job_id, idx)
SELECT message_id, job_id, idx FROM images WHERE message_id IS NOT NULL;
