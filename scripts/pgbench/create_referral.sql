-- One CreateReferral's writes in one transaction (schema.sql). The
-- referral's body is the 1.4 KB of the load test's referral; the person,
-- event, audit entry and stored answer are their sizes in the exchange.
\set person random(1, 1000000000)
BEGIN;
SELECT 'referrals/' || nextval('referral_ids') AS name \gset
INSERT INTO referrals VALUES (:name, 'organizations/practice', 'organizations/group',
  'organizations/group/services/walks', NULL, 'consents/' || :person, sha256(:person::text::bytea), 1,
  now() + interval '72 hours', now(), convert_to(repeat('x', 1400), 'UTF8'));
INSERT INTO referral_parties VALUES ('organizations/practice', now(), :name), ('organizations/group', now(), :name);
WITH e AS (INSERT INTO events (body) VALUES (convert_to(repeat('e', 120), 'UTF8')) RETURNING seq)
  INSERT INTO event_audience SELECT o, e.seq FROM e, (VALUES ('organizations/practice'), ('organizations/group')) v(o);
INSERT INTO audit (at, org, resource, body) VALUES (now(), 'organizations/practice', :name, convert_to(repeat('a', 260), 'UTF8'));
INSERT INTO answers VALUES ('organizations/practice', :name, convert_to(repeat('r', 300), 'UTF8'));
END;
