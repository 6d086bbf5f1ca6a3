package bolt_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/rules/report"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/storage/kv"
	"github.com/social-prescribing/exchange/server/storage/kv/kvtest"
	"github.com/social-prescribing/exchange/server/storage/storagetest"
)

// The suites run with the default checkpoints, with a checkpoint after
// every group (reads come from the file), and with none (reads come from
// the changes laid over it).
func TestEngine(t *testing.T)           { kvtest.Run(t, engine(0)) }
func TestStore(t *testing.T)            { storagetest.Run(t, engine(0)) }
func TestEngineEveryGroup(t *testing.T) { kvtest.Run(t, engine(time.Nanosecond)) }
func TestStoreEveryGroup(t *testing.T)  { storagetest.Run(t, engine(time.Nanosecond)) }
func TestStoreInOverlay(t *testing.T)   { storagetest.Run(t, engine(time.Hour)) }
func TestEngineInOverlay(t *testing.T)  { kvtest.Run(t, engine(time.Hour)) }

func engine(every time.Duration) kvtest.Opener {
	return func(t *testing.T, dir string) kv.Engine {
		e, err := bolt.Open(filepath.Join(dir, "exchange.db"), bolt.Options{CheckpointInterval: every})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
}

// reopenAltered closes s, changes its file with bbolt alone as an earlier
// release or a damaged disk would have left it, and opens it again; the
// store returned closes when the test ends.
func reopenAltered(t *testing.T, s *exchangetest.BoltStore, alter func(*bbolt.Tx) error) *exchangetest.BoltStore {
	t.Helper()
	path := s.Path()
	s.Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(alter)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = exchangetest.OpenBolt(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestFillsNewIndexes opens a store made before the person, closed and
// state-count indexes existed (simulated by deleting them) and checks that
// Open fills them from the stored referrals.
func TestFillsNewIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	s, err := exchangetest.OpenBolt(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	states := []pb.ReferralState{pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_COMPLETED, pb.ReferralState_REFERRAL_STATE_REQUESTED}
	err = s.Update(context.Background(), func(tx storage.WriteTx) error {
		for i, st := range states {
			r := &pb.Referral{Name: fmt.Sprintf("referrals/r%d", i), Referrer: "organizations/gp", Recipient: "organizations/lw",
				RecipientService: "organizations/lw/services/s", Consent: "consents/c", Person: &pb.Person{NhsNumber: "9434765919"},
				State: st, CreateTime: timestamppb.New(t0), StateTime: timestamppb.New(t0), ReplyBy: timestamppb.New(t0.Add(time.Hour))}
			if err := tx.CreateReferral(r, []string{r.Referrer, r.Recipient}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s = reopenAltered(t, s, func(tx *bbolt.Tx) error {
		// An older store has no schema record either.
		for _, b := range []string{"ix_person_referral", "ix_referral_closed", "referral_state_count", "ix_person_open", "store_meta"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		// The index of one open referral per person and service that
		// ix_person_open replaced.
		old, err := tx.CreateBucket([]byte("ix_referral_open"))
		if err != nil {
			return err
		}
		return old.Put([]byte("x"), []byte("referrals/r0"))
	})
	err = s.View(context.Background(), func(tx storage.ReadTx) error {
		counts, err := tx.ReferralStates()
		if want := map[pb.ReferralState]int64{states[0]: 2, states[1]: 1}; fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("state counts after filling = %v, want %v", counts, want)
		}
		person, err2 := tx.ReferralsOfPerson("9434765919")
		if len(person) != 3 {
			t.Errorf("referrals of the person after filling = %v", person)
		}
		closed, err3 := tx.ClosedReferralsBefore(t0.Add(time.Hour), 10)
		if len(closed) != 1 || closed[0].Name != "referrals/r1" {
			t.Errorf("closed referrals after filling = %v", closed)
		}
		open, err4 := tx.OpenReferralsFor("9434765919", "organizations/lw/services/s")
		if fmt.Sprint(open) != "[referrals/r0 referrals/r2]" {
			t.Errorf("open referrals after filling = %v", open)
		}
		return errors.Join(err, err2, err3, err4)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket([]byte("ix_referral_open")).Cursor().First(); k != nil {
			t.Error("the retired ix_referral_open still holds its keys")
		}
		return nil
	})
}

// TestReadsOlderStoredAnswers: stored answers written as JSON by earlier
// versions are still read next to the binary ones written now, whole or
// elided, and a damaged record is an error, not a wrong answer.
func TestReadsOlderStoredAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	s, err := exchangetest.OpenBolt(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	now := &storage.Idempotency{Method: "/exchange.v1.ReferralService/CreateReferral", RequestHash: []byte{1, 2, 3}, Response: []byte("new answer"), CreateTime: t0.Add(time.Hour)}
	elided := &storage.Idempotency{Method: "/exchange.v1.ReferralService/CreateReferral", RequestHash: []byte{6}, Response: []byte{3, 1}, Elided: true, CreateTime: t0.Add(time.Hour)}
	if err := s.Update(context.Background(), func(tx storage.WriteTx) error {
		return errors.Join(tx.PutIdempotency("organizations/gp", "new", now), tx.PutIdempotency("organizations/gp", "elided", elided))
	}); err != nil {
		t.Fatal(err)
	}
	s = reopenAltered(t, s, func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("idempotency"))
		// As the JSON encoder of earlier versions wrote it.
		old := `{"method":"/exchange.v1.ConsentService/CreateConsent","request_hash":"BAU=","response":"b2xkIGFuc3dlcg==","create_time":"2025-01-01T09:00:00Z"}`
		return errors.Join(b.Put([]byte("organizations/gp\x00old"), []byte(old)), b.Put([]byte("organizations/gp\x00bad"), []byte{1, 200}))
	})
	err = s.View(context.Background(), func(tx storage.ReadTx) error {
		for id, want := range map[string]storage.Idempotency{
			"new":    *now,
			"elided": *elided,
			"old":    {Method: "/exchange.v1.ConsentService/CreateConsent", RequestHash: []byte{4, 5}, Response: []byte("old answer"), CreateTime: t0},
		} {
			got, err := tx.GetIdempotency("organizations/gp", id)
			if err != nil {
				return err
			}
			if got.Method != want.Method || string(got.RequestHash) != string(want.RequestHash) || string(got.Response) != string(want.Response) || got.Elided != want.Elided || !got.CreateTime.Equal(want.CreateTime) {
				t.Errorf("stored answer %s = %+v, want %+v", id, got, want)
			}
		}
		if _, err := tx.GetIdempotency("organizations/gp", "bad"); err == nil {
			t.Error("a damaged stored answer was read without an error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The retention sweep drops the old JSON record by its time, and the
	// damaged one, which it cannot read, instead of failing on it; one
	// answer a piece, so that each is found and deleted on its own.
	dropped, err := storage.DeleteExpiredAnswers(context.Background(), s, now.CreateTime, 1)
	if err != nil || dropped != 2 {
		t.Fatalf("DeleteExpiredAnswers = %d, %v; want 2 (the old and the damaged), nil", dropped, err)
	}
	kept := func(want map[string]bool) {
		t.Helper()
		err := s.View(context.Background(), func(tx storage.ReadTx) error {
			for id, kept := range want {
				rec, err := tx.GetIdempotency("organizations/gp", id)
				if got := err == nil && rec != nil; got != kept {
					t.Errorf("stored answer %s kept = %v (%v), want %v", id, got, err, kept)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	kept(map[string]bool{"new": true, "elided": true, "old": false, "bad": false})
	// Erasure drops a damaged record too, whatever it is looking for.
	s = reopenAltered(t, s, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("idempotency")).Put([]byte("organizations/gp\x00bad"), []byte{2, 7})
	})
	err = s.Update(context.Background(), func(tx storage.WriteTx) error {
		dropped, err = tx.DeleteIdempotency(func(*storage.Idempotency) bool { return false })
		return err
	})
	if err != nil || dropped != 1 {
		t.Fatalf("DeleteIdempotency = %d, %v; want 1 (the damaged), nil", dropped, err)
	}
	kept(map[string]bool{"new": true, "elided": true, "bad": false})
}

// TestBackupHoldsAcknowledgedAndIsNotRolledForward: a backup holds every
// write acknowledged before it, checkpointed or not, and a backup restored
// beside the live log is not rolled forward by the log's later records.
func TestBackupHoldsAcknowledgedAndIsNotRolledForward(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "exchange.db")
	s, err := exchangetest.OpenBolt(path, bolt.Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	org := func(name string) error {
		return s.Update(context.Background(), func(tx storage.WriteTx) error {
			return tx.CreateOrganization(&pb.Organization{Name: name})
		})
	}
	if err := org("organizations/before"); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "exchange.db")
	f, err := os.Create(restored)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(context.Background(), func(int64) (io.Writer, error) { return f, nil }); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := org("organizations/after"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".log", ".log.1"} {
		log, err := os.ReadFile(path + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(restored+name, log, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := exchangetest.OpenBolt(restored, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.View(context.Background(), func(tx storage.ReadTx) error {
		if _, err := tx.GetOrganization("organizations/before"); err != nil {
			return fmt.Errorf("the write before the backup: %w", err)
		}
		if _, err := tx.GetOrganization("organizations/after"); !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("the write after the backup is in the restored copy (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestFailedCheckpointLosesNothing fills a small file system so that a
// checkpoint cannot write the bbolt file, and checks that the failure loses
// nothing: reads still see every acknowledged write, writes that fit in the
// log go on, and once space returns a checkpoint succeeds and a reopened
// store holds everything acknowledged.
func TestFailedCheckpointLosesNothing(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a small tmpfs (needs root): %v %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %s", out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	path := filepath.Join(dir, "exchange.db")
	var checkpoints, failed int
	s, err := exchangetest.OpenBolt(path, bolt.Options{CheckpointInterval: time.Hour, OnCheckpoint: func(_ time.Duration, err error) {
		checkpoints++
		if err != nil {
			failed++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	var acked []string
	org := func(name string) error {
		err := s.Update(context.Background(), func(tx storage.WriteTx) error {
			return tx.CreateOrganization(&pb.Organization{Name: name, DisplayName: strings.Repeat("x", 2000)})
		})
		if err == nil {
			acked = append(acked, name)
		}
		return err
	}
	for i := range 300 {
		if err := org(fmt.Sprint("organizations/a", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Fill the file system.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Sync()
	// The checkpoint a backup asks for cannot write the file's new pages.
	err = s.Backup(context.Background(), func(int64) (io.Writer, error) { return io.Discard, nil })
	if !errors.Is(err, storage.ErrWriteFailed) || failed == 0 {
		t.Fatalf("backup on a full disk = %v (%d of %d checkpoints failed), want a failed checkpoint", err, failed, checkpoints)
	}
	// Writes go on while the log has room, and fail cleanly when it has none.
	var refused error
	for i := range 2000 {
		if refused = org(fmt.Sprint("organizations/b", i)); refused != nil {
			break
		}
	}
	if !errors.Is(refused, storage.ErrWriteFailed) {
		t.Fatalf("writes on a full disk: %v", refused)
	}
	seen := func(s *exchangetest.BoltStore) {
		t.Helper()
		err := s.View(context.Background(), func(tx storage.ReadTx) error {
			for _, name := range acked {
				if _, err := tx.GetOrganization(name); err != nil {
					return fmt.Errorf("acknowledged %s: %w", name, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	seen(s)
	// Space returns: a checkpoint succeeds and everything is in the file.
	filler.Close()
	os.Remove(filler.Name())
	if err := org("organizations/after"); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(context.Background(), func(int64) (io.Writer, error) { return io.Discard, nil }); err != nil {
		t.Fatalf("backup once space returned: %v", err)
	}
	s.Close()
	if s, err = exchangetest.OpenBolt(path, bolt.Options{}); err != nil {
		t.Fatal(err)
	}
	seen(s)
	t.Logf("%d acknowledged, %d of %d checkpoints failed", len(acked), failed, checkpoints)
}

// TestSequenceBucketsArePacked: a checkpoint fills the pages of a log's
// bucket (the audit log, the events), keyed by its sequence, to 90%, not
// bbolt's half, since no key is ever inserted between theirs; a bucket
// keyed by organisation keeps room between its keys.
func TestSequenceBucketsArePacked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	s, err := exchangetest.OpenBolt(path, bolt.Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		err := s.Update(context.Background(), func(tx storage.WriteTx) error {
			for j := range 50 {
				org := fmt.Sprintf("organizations/o%d", (i*50+j)%7)
				if err := tx.AppendAudit(&pb.AuditEvent{
					EventTime: timestamppb.New(time.Unix(1_700_000_000+int64(i*50+j), 0)), Organization: org,
					Method: "/exchange.v1.ReferralService/CreateReferral", Resource: fmt.Sprintf("referrals/r%05d", i*50+j), Code: "OK",
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil { // Close checkpoints what the log holds
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fill := func(bucket string) float64 {
		var st bbolt.BucketStats
		db.View(func(tx *bbolt.Tx) error {
			st = tx.Bucket([]byte(bucket)).Stats()
			return nil
		})
		if st.KeyN != 2000 || st.LeafAlloc == 0 {
			t.Fatalf("%s: %d keys on %d bytes of leaf pages, want 2000 keys on pages of their own", bucket, st.KeyN, st.LeafAlloc)
		}
		return float64(st.LeafInuse) / float64(st.LeafAlloc)
	}
	for _, c := range []struct {
		bucket   string
		min, max float64
	}{
		{"audit", 0.8, 1},
		{"ix_audit_org", 0, 0.7},
	} {
		if f := fill(c.bucket); f < c.min || f > c.max {
			t.Errorf("%s: leaf pages %.0f%% full, want %.0f-%.0f%%", c.bucket, 100*f, 100*c.min, 100*c.max)
		}
	}
}

// TestFillsWhatReportsCount opens a store of schema 1, made before reports
// were kept as sums (simulated by deleting them), and checks that Open fills
// the rows, the sums, the referrals of each consent and the capacity
// events' index, to what a store that kept them all along holds.
func TestFillsWhatReportsCount(t *testing.T) {
	s, err := exchangetest.OpenBolt(filepath.Join(t.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 30, 9, 0, 0, 0, time.UTC)
	consent := &pb.Consent{Name: "consents/c", NhsNumber: "9434765919", CreateTime: timestamppb.New(t0),
		Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION}}
	err = s.Update(context.Background(), func(tx storage.WriteTx) error {
		if err := tx.CreateConsent(consent); err != nil {
			return err
		}
		for i := range 3 {
			r := &pb.Referral{Name: fmt.Sprintf("referrals/r%d", i), Referrer: "organizations/gp", Recipient: "organizations/lw",
				RecipientService: "organizations/lw/services/s", Consent: consent.Name, Person: &pb.Person{NhsNumber: consent.NhsNumber},
				State: pb.ReferralState_REFERRAL_STATE_REQUESTED, CreateTime: timestamppb.New(t0.AddDate(0, 0, i)), ReplyBy: timestamppb.New(t0.Add(time.Hour))}
			if err := tx.CreateReferral(r, []string{r.Referrer, r.Recipient}); err != nil {
				return err
			}
		}
		for i, tp := range []pb.Timepoint{pb.Timepoint_TIMEPOINT_BASELINE, pb.Timepoint_TIMEPOINT_EXIT} {
			if err := tx.CreateFeedback(&pb.Feedback{Name: fmt.Sprintf("referrals/r1/feedback/f%d", i), Author: "organizations/lw", CreateTime: timestamppb.New(t0.AddDate(0, 0, 2+i)),
				Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_UCLA3, Timepoint: tp, Total: int32(7 - i)}}}); err != nil {
				return err
			}
		}
		return tx.AppendEvent(&storage.Event{Event: &pb.Event{Type: pb.EventType_EVENT_TYPE_CAPACITY_CHANGED, Resource: "organizations/lw/services/s/capacity",
			CapacityStatus: pb.CapacityStatus_CAPACITY_STATUS_PAUSED}, Public: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	held := func(s storage.Store) string {
		var out []string
		err := s.View(context.Background(), func(tx storage.ReadTx) error {
			err := tx.ReportSums(time.Time{}, time.Time{}, "", report.SumsFunc(func(at time.Time, sums *report.Sums) error {
				b, err := json.Marshal(sums)
				out = append(out, at.String()+" "+string(b))
				return err
			}))
			events, err2 := tx.CapacityEvents("organizations/lw/services/s/capacity")
			out = append(out, fmt.Sprint(len(events)))
			return errors.Join(err, err2)
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "\n")
	}
	want := held(s)
	if !strings.Contains(want, `"N":2`) || !strings.Contains(want, `"N":1`) || !strings.HasSuffix(want, "\n1") {
		t.Fatalf("before: %s", want)
	}
	s = reopenAltered(t, s, func(tx *bbolt.Tx) error {
		for _, b := range []string{"report_rows", "report_sums", "ix_consent_referral", "ix_event_capacity"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return fmt.Errorf("%s: %w", b, err)
			}
		}
		return tx.Bucket([]byte("store_meta")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 1))
	})
	if got := held(s); got != want {
		t.Errorf("after filling:\n%s\nwant:\n%s", got, want)
	}
	// The referrals of the consent were filled too: withdrawing it takes
	// them out.
	withdrawn := proto.Clone(consent).(*pb.Consent)
	withdrawn.WithdrawTime = timestamppb.New(t0.AddDate(0, 1, 0))
	if err := s.Update(context.Background(), func(tx storage.WriteTx) error { return tx.UpdateConsent(withdrawn) }); err != nil {
		t.Fatal(err)
	}
	if got := held(s); got != "1" {
		t.Errorf("after withdrawal: %s", got)
	}
}
