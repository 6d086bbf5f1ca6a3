-- The tables CreateReferral's one transaction writes, for pgbench
-- (scripts/bench.sh): the referral with six indexes beside its key, its
-- two party rows, the event and its two audience rows, the audit entry and
-- the stored answer, sized as the exchange's are (docs/benchmarks.md).
CREATE TABLE referrals (
  name text PRIMARY KEY,
  referrer text NOT NULL,
  recipient text NOT NULL,
  recipient_service text NOT NULL,
  parent text,
  consent text NOT NULL,
  person bytea NOT NULL,
  state smallint NOT NULL,
  reply_by timestamptz NOT NULL,
  created timestamptz NOT NULL,
  body bytea NOT NULL
);
CREATE INDEX referrals_inbox ON referrals (recipient, state, created);
CREATE INDEX referrals_referrer ON referrals (referrer, created);
CREATE INDEX referrals_children ON referrals (parent, created);
CREATE INDEX referrals_due ON referrals (recipient, reply_by) WHERE state = 1;
CREATE INDEX referrals_open ON referrals (person, recipient_service);
CREATE INDEX referrals_consent ON referrals (consent);
CREATE TABLE referral_parties (
  org text NOT NULL,
  created timestamptz NOT NULL,
  referral text NOT NULL,
  PRIMARY KEY (org, created, referral)
);
CREATE TABLE events (seq bigserial PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE event_audience (org text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (org, seq));
CREATE TABLE audit (
  seq bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  org text NOT NULL,
  resource text NOT NULL,
  body bytea NOT NULL
);
CREATE TABLE answers (org text NOT NULL, request_id text NOT NULL, body bytea NOT NULL, PRIMARY KEY (org, request_id));
CREATE SEQUENCE referral_ids;
