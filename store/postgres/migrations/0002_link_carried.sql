-- Version 2: the delivered copies that carried each link, per day and
-- dimension (LinkStat.Delivered), as bbolt's "link-carried" bucket.
-- Written about once a second by each node from what it delivered
-- (store.DeliveryTally); TopLinks sums the days asked for.
CREATE TABLE link_carried (
    account text COLLATE "C" NOT NULL,
    dim text COLLATE "C" NOT NULL,
    day int NOT NULL,
    link text COLLATE "C" NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (account, dim, day, link)
);
