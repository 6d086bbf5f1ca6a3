package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// The audit log records every call of a method policy.Audited names:
// who (organisation and credential), what (method and resource, and what a
// list showed), when, and the outcome, refusals included. A write's entry
// goes in the write's own transaction (mutate); every other call's entry
// is committed before the answer leaves, and when it cannot be, the call
// fails: nothing is shown that the log does not record.

// callNote travels in a call's context from the outermost interceptor
// (UnaryLog) to the code that learns more about the call: authentication
// sets the caller, handlers the resource. The log line and the audit entry
// are both written from it.
type callNote struct {
	method   string
	audited  bool   // policy.Audited names the method
	caller   Caller // set by authentication
	resource string // set by handlers whose resource is not in the messages
	cleared  int32
	written  bool // the audit entry went in the call's write transaction
}

type noteKey struct{}

func noteFrom(ctx context.Context) *callNote {
	n, _ := ctx.Value(noteKey{}).(*callNote)
	return n
}

// withNote returns ctx carrying the call's note, starting one if no outer
// interceptor has.
func withNote(ctx context.Context, method string) (context.Context, *callNote) {
	if n := noteFrom(ctx); n != nil {
		return ctx, n
	}
	n := &callNote{method: method, audited: policy.Audited[method]}
	return context.WithValue(ctx, noteKey{}, n), n
}

// UnaryAudit records audited unary calls. It must be the first (outermost)
// interceptor, so that refusals by authentication and rate limits are
// recorded too.
func (s *Server) UnaryAudit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !policy.Audited[info.FullMethod] {
		return handler(ctx, req)
	}
	ctx, n := withNote(ctx, info.FullMethod)
	resp, err := handler(ctx, req)
	if n.written {
		return resp, err
	}
	in, _ := req.(proto.Message)
	var out proto.Message
	if err == nil {
		out, _ = resp.(proto.Message)
	}
	if aerr := s.core.appendAudit(ctx, auditEntry(n, s.core.clock(ctx), in, out, err)); aerr != nil {
		return nil, aerr
	}
	return resp, err
}

// StreamAudit records audited streaming calls (Backup) when they end. The
// handler of such a stream records its start itself (auditStart) before it
// sends anything.
func (s *Server) StreamAudit(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !policy.Audited[info.FullMethod] {
		return handler(srv, ss)
	}
	ctx, n := withNote(ss.Context(), info.FullMethod)
	err := handler(srv, authedStream{ss, ctx})
	if n.written && err == nil {
		return nil
	}
	if aerr := s.core.appendAudit(ss.Context(), auditEntry(n, s.core.clock(ctx), nil, nil, err)); aerr != nil {
		return aerr
	}
	return err
}

// auditStart records an audited stream before it sends anything.
func (c *core) auditStart(ctx context.Context) error {
	n := noteFrom(ctx)
	if n == nil || !n.audited {
		return nil
	}
	if err := c.appendAudit(ctx, auditEntry(n, c.clock(ctx), nil, nil, nil)); err != nil {
		return err
	}
	n.written = true
	return nil
}

// appendAudit commits one audit entry on its own.
func (c *core) appendAudit(ctx context.Context, e *pb.AuditEvent) error {
	err := c.store.Update(context.WithoutCancel(ctx), func(tx storage.WriteTx) error {
		err := tx.AppendAudit(e)
		return err
	})
	if err != nil {
		slog.ErrorContext(ctx, "audit log: cannot record a call; refusing it", "method", e.Method, "err", err)
		return storeError(ctx, err)
	}
	return nil
}

// auditInTx adds the entry of a successful write to the write's own
// transaction.
func auditInTx(ctx context.Context, tx storage.WriteTx, now time.Time, req, resp proto.Message) error {
	n := noteFrom(ctx)
	if n == nil || !n.audited {
		return nil
	}
	err := tx.AppendAudit(auditEntry(n, now, req, resp, nil))
	return err
}

// auditEntry builds the entry of a call from its messages and outcome.
func auditEntry(n *callNote, now time.Time, req, resp proto.Message, err error) *pb.AuditEvent {
	e := &pb.AuditEvent{
		EventTime: timestamppb.New(now), Organization: n.caller.Org, Credential: n.caller.KeyName,
		Method: n.method, Resource: n.resource, ClearedReferrals: n.cleared,
	}
	if req != nil {
		e.RequestId = stringField(req.ProtoReflect(), "request_id")
		if e.Resource == "" {
			e.Resource = resourceOf(req, resp)
		}
	}
	if resp != nil {
		e.Shown = shownBy(resp)
	}
	e.Code, e.Reason = outcome(err)
	return e
}

// outcome is a call's status code by name ("OK", "INVALID_ARGUMENT") and
// the reason of its ErrorInfo, if any.
func outcome(err error) (string, string) {
	if err == nil {
		return "OK", ""
	}
	st := status.Convert(err)
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.Reason
		}
	}
	return code.Code(st.Code()).String(), reason
}

// maxAuditResource bounds what the audit log records as a call's resource
// (a name, a parent or a filter the caller sent), which is also a key of
// its index: no name of the exchange is near it, and the store refuses
// keys over 32 KiB.
const maxAuditResource = 1024

// resourceOf is what a call was about (aboutWhat), a longer one recorded as
// `oversized/` and a SHA-256 of it.
func resourceOf(req, resp proto.Message) string {
	s := aboutWhat(req, resp)
	if len(s) > maxAuditResource {
		h := sha256.Sum256([]byte(s))
		return "oversized/" + hex.EncodeToString(h[:16])
	}
	return s
}

// aboutWhat is the name of the resource a call returned or named, else its
// parent, else its filter. A person's NHS number is recorded only as
// PersonResource.
func aboutWhat(req, resp proto.Message) string {
	if resp != nil {
		if s := nameIn(resp.ProtoReflect()); s != "" {
			return s
		}
	}
	r := req.ProtoReflect()
	if s := nameIn(r); s != "" {
		return s
	}
	for _, f := range []protoreflect.Name{"parent", "filter"} {
		if s := stringField(r, f); s != "" {
			return s
		}
	}
	if s := stringField(r, "nhs_number"); s != "" {
		return PersonResource(s)
	}
	return ""
}

// nameIn is m's name field, or the name of the first message field that has
// one (CreateApiKeyResponse.api_key, UpdateReferral's referral).
func nameIn(m protoreflect.Message) string {
	if s := stringField(m, "name"); s != "" {
		return s
	}
	var out string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			out = stringField(v.Message(), "name")
		}
		return out == ""
	})
	return out
}

// shownBy lists the names of the resources in a list response.
// Only the repeated message fields are looked at: ranging over every field
// of a large answer (a referral) would cost each of them a value.
func shownBy(resp proto.Message) []string {
	var out []string
	m := resp.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !fd.IsList() || fd.Kind() != protoreflect.MessageKind || !m.Has(fd) {
			continue
		}
		l := m.Get(fd).List()
		for i := range l.Len() {
			if s := stringField(l.Get(i).Message(), "name"); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func stringField(m protoreflect.Message, name protoreflect.Name) string {
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return ""
	}
	return m.Get(fd).String()
}

// PersonResource is how the audit log names a person: `persons/` and a
// hash of the NHS number, so the log holds no NHS number yet an auditor
// who knows one can find the calls about it.
func PersonResource(nhsNumber string) string {
	if n, ok := validate.NHSNumber(nhsNumber); ok {
		nhsNumber = n
	}
	h := storage.PersonHash(nhsNumber)
	return "persons/" + hex.EncodeToString(h[:8])
}
