package api

import (
	"bytes"
	"context"
	"io"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

type admin struct {
	*core
	pb.UnimplementedAdminServiceServer
}

func (a *admin) ListAuditEvents(ctx context.Context, req *pb.ListAuditEventsRequest) (*pb.ListAuditEventsResponse, error) {
	if err := mayManage(ctx, "ListAuditEvents", ""); err != nil {
		return nil, err
	}
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 100)
	q := storage.AuditQuery{Organization: req.Organization, Resource: req.Resource}
	if req.StartTime != nil {
		q.Start = req.StartTime.AsTime()
	}
	if req.EndTime != nil {
		q.End = req.EndTime.AsTime()
	}
	if !q.Start.IsZero() && !q.End.IsZero() && !q.End.After(q.Start) {
		v.Add("end_time", "must be after start_time")
	}
	filter := req.Organization + "\x00" + req.Resource + "\x00" + q.Start.String() + "\x00" + q.End.String()
	after := parsePageToken(&v, "page_token", req.PageToken, filter)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListAuditEventsResponse{}
	err := a.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		p, err := tx.ListAudit(q, after, size)
		resp.AuditEvents, resp.NextPageToken = p.Items, pageToken(p.Next, filter)
		return err
	})
	return resp, err
}

func (a *admin) ErasePerson(ctx context.Context, req *pb.ErasePersonRequest) (*pb.ErasePersonResponse, error) {
	if err := mayManage(ctx, "ErasePerson", ""); err != nil {
		return nil, err
	}
	var v validate.Violations
	nhs := req.NhsNumber
	validate.NHS(&v, "nhs_number", &nhs)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ErasePersonResponse{}
	err := a.mutate(ctx, "ErasePerson", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		out := &pb.ErasePersonResponse{Name: "erasures/" + newID()}
		names, err := tx.ReferralsOfPerson(nhs)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			r, err := tx.GetReferral(name)
			if err != nil {
				return nil, err
			}
			cancelled, notes, err := clearReferral(ctx, tx, now, r, true)
			if err != nil {
				return nil, err
			}
			out.ClearedReferrals++
			out.ClearedFeedback += notes
			if cancelled {
				out.CancelledReferrals++
			}
		}
		var consents []*pb.Consent
		for after := ""; ; {
			p, err := tx.ListConsents(nhs, after, validate.MaxPageSize, nil)
			if err != nil {
				return nil, err
			}
			consents = append(consents, p.Items...)
			if after = p.Next; after == "" {
				break
			}
		}
		for _, c := range consents { // cleared after the scan: clearing moves the index
			c.NhsNumber = ""
			stampConsent(c)
			if err := tx.UpdateConsent(c); err != nil {
				return nil, err
			}
			out.ClearedConsents++
		}
		// Stored answers to retried requests may hold the person too: any
		// that holds the NHS number or names one of their referrals (and so
		// their feedback) or consents goes.
		marks := [][]byte{[]byte(nhs)}
		for _, n := range names {
			marks = append(marks, []byte(n))
		}
		for _, c := range consents {
			marks = append(marks, []byte(c.Name))
		}
		if _, err := tx.DeleteIdempotency(func(rec *storage.Idempotency) bool {
			return slices.ContainsFunc(marks, func(m []byte) bool { return bytes.Contains(rec.Response, m) })
		}); err != nil {
			return nil, err
		}
		if n := noteFrom(ctx); n != nil {
			n.cleared = out.ClearedReferrals
		}
		return out, nil
	})
	return resp, err
}

// clearReferral clears a referral's personal fields (policy.ClearPerson) and
// the text of its notes. With cancel, an open referral is first cancelled
// with reason ERASED, its capacity counts and event written as for any move.
func clearReferral(ctx context.Context, tx storage.WriteTx, now time.Time, r *pb.Referral, cancel bool) (cancelled bool, notes int32, err error) {
	for after := ""; ; {
		p, err := tx.ListFeedback(r.Name, after, validate.MaxPageSize, nil)
		if err != nil {
			return false, 0, err
		}
		for _, f := range p.Items {
			if policy.ClearNote(f) {
				if err := tx.UpdateFeedback(f); err != nil {
					return false, 0, err
				}
				notes++
			}
		}
		if after = p.Next; after == "" {
			break
		}
	}
	if !policy.ClearPerson(r, now) {
		return false, notes, nil
	}
	if cancel && lifecycle.Open(r.State) {
		anc, err := ancestors(tx, r)
		if err != nil {
			return false, 0, err
		}
		return true, notes, exchangeMove(ctx, tx, now, r, policy.Parties(r, anc), lifecycle.Erased)
	}
	r.UpdateTime = timestamppb.New(now)
	stampReferral(r)
	return false, notes, tx.UpdateReferral(r)
}

// retentionBatch is the most referrals one retention transaction clears
// (fewer where the store takes less in one, core.pieces).
const retentionBatch = 200

// IdempotencyWindow is how long a request_id is remembered: a retry within
// it returns the first answer; after it, the stored answer is deleted (it
// may hold personal data) and the id may be used again.
const IdempotencyWindow = 7 * 24 * time.Hour

// SweepRetention deletes stored answers older than the idempotency window,
// a piece at a time (storage.DeleteExpiredAnswers), then clears the
// personal fields of referrals closed longer than period ago, in batches.
// Each batch is audited as one entry with resource `retention`, the first
// also for the answers deleted. It returns how many referrals it cleared.
func (s *Server) SweepRetention(ctx context.Context, period time.Duration) (int, error) {
	dropped, err := storage.DeleteExpiredAnswers(ctx, s.core.store, s.core.clock(ctx).Add(-IdempotencyWindow), storage.AnswerSweepPiece)
	if err != nil {
		return 0, err
	}
	return s.core.pieces(ctx, retentionBatch, func(piece int) (int, error) {
		n := 0
		err := s.core.store.Update(ctx, func(tx storage.WriteTx) error {
			n = 0
			now := s.core.clock(ctx)
			if period > 0 {
				closed, err := tx.ClosedReferralsBefore(now.Add(-period), piece)
				if err != nil {
					return err
				}
				for _, r := range closed {
					if _, _, err := clearReferral(ctx, tx, now, r, false); err != nil {
						return err
					}
					n++
				}
			}
			if n == 0 && dropped == 0 {
				return nil
			}
			return tx.AppendAudit(&pb.AuditEvent{EventTime: timestamppb.New(now), Method: "retention",
				Resource: "retention", Code: "OK", ClearedReferrals: int32(n)})
		})
		if err == nil {
			dropped = 0
		}
		return n, err
	})
}

// backupChunk is the size of each message of a backup stream.
const backupChunk = 256 << 10

func (a *admin) Backup(req *pb.BackupRequest, stream pb.AdminService_BackupServer) error {
	ctx := stream.Context()
	if err := mayManage(ctx, "Backup", ""); err != nil {
		return err
	}
	if err := a.auditStart(ctx); err != nil {
		return err
	}
	var c *chunker
	err := a.store.Backup(ctx, func(size int64) (io.Writer, error) {
		c = &chunker{send: stream.Send, total: size, buf: make([]byte, 0, backupChunk)}
		return c, nil
	})
	if err == nil {
		c.last = true
		err = c.flush()
	}
	return storeError(ctx, err)
}

// chunker cuts the backup into messages; the first carries the total size.
type chunker struct {
	send  func(*pb.BackupChunk) error
	total int64
	buf   []byte
	sent  bool
	last  bool // the next flush is the last
}

func (c *chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf, p = append(c.buf, p[:k]...), p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunker) flush() error {
	m := &pb.BackupChunk{Data: c.buf, Last: c.last}
	if !c.sent && c.total > 0 {
		m.TotalBytes, c.sent = c.total, true
	}
	err := c.send(m)
	c.buf = c.buf[:0]
	return err
}
