package web

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/social-prescribing/exchange/client/reports"
	"github.com/social-prescribing/exchange/gateway"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

const pageSize = 20

// code is an enum value's name without its prefix, as forms send it:
// REFERRAL_STATE_IN_PROGRESS -> IN_PROGRESS.
func code(e protoreflect.Enum) string { return pb.Code(e) }

// label is an enum value in words: REFERRAL_STATE_IN_PROGRESS -> "In progress".
func label(e protoreflect.Enum) string { return pb.Label(e) }

// parseCode returns the number of the value of enum d whose code is c, or 0.
func parseCode(d protoreflect.EnumDescriptor, c string) protoreflect.EnumNumber {
	n, _ := pb.ParseCode(d, c)
	return n
}

var funcs = template.FuncMap{
	"label": label,
	"code":  code,
	"when": func(t interface{ AsTime() time.Time }) string {
		return t.AsTime().In(london).Format("Mon 2 Jan 2006, 15:04")
	},
	"id":   func(name string) string { return strings.TrimPrefix(name, "referrals/") },
	"org":  func(name string) string { return strings.TrimPrefix(name, "organizations/") },
	"join": func(v []int32) string { return strings.Trim(fmt.Sprint(v), "[]") },
	// Chart arithmetic, for SVG coordinates.
	"add":  func(a, b any) float64 { return num(a) + num(b) },
	"sub":  func(a, b any) float64 { return num(a) - num(b) },
	"half": func(a any) float64 { return num(a) / 2 },
	"f":    func(a any) string { return strconv.FormatFloat(num(a), 'f', 1, 64) },
	"short": func(s string) string {
		if r := []rune(s); len(r) > 30 {
			return string(r[:29]) + "…"
		}
		return s
	},
	"tablesOf": func(report string, tables []reports.Table, query template.URL) any {
		return struct {
			Report string
			Query  template.URL
			Tables []reports.Table
		}{report, query, tables}
	},
	// newid is a fresh request_id for each form, so a resubmitted form is
	// recognised by the exchange and not applied twice.
	"newid": random,
}

// num is a template number as a float64.
func num(v any) float64 {
	switch n := v.(type) {
	case int:
		return float64(n)
	case float64:
		return n
	case int32:
		return float64(n)
	}
	return 0
}

var london = reports.London

// problem is an error from the exchange put in words for the page: a
// message and, per form field, what is wrong with it.
type problem struct {
	code   int
	msg    string
	fields map[string]string
}

func explain(err error) *problem {
	st := status.Convert(err)
	p := &problem{code: gateway.HTTPStatus(st.Code()), msg: st.Message(), fields: map[string]string{}}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				// feedback.outcome.item_scores[2] -> item_scores
				f := v.Field[strings.LastIndex(v.Field, ".")+1:]
				if i := strings.IndexByte(f, '['); i >= 0 {
					f = f[:i]
				}
				if _, dup := p.fields[f]; !dup {
					p.fields[f] = v.Description
				}
			}
		}
	}
	switch st.Code() {
	case codes.Aborted:
		p.msg = "Someone changed this referral since you opened it. Here it is as it is now: check it and try again."
	case codes.InvalidArgument:
		if len(p.fields) > 0 {
			p.msg = "Some answers need correcting: see the messages next to them."
		}
	case codes.Unauthenticated:
		p.msg = "The exchange no longer accepts your key. Sign in again."
	}
	return p
}

// Inbox.

type section struct {
	ID, Title, Hint string
	Referrals       []*pb.Referral
	Next            string // link to the next page of this section
	Overdue         bool
}

func (w *Web) inbox(rw http.ResponseWriter, r *http.Request, s *session) {
	only := r.URL.Query().Get("section")
	token := r.URL.Query().Get("page")
	recipient := `recipient = "` + s.org + `"`
	sections := []struct {
		id, title, hint, filter string
		keep                    func(*pb.Referral) bool
	}{
		{"overdue", "Overdue", "New referrals past the date the referrer asked for a reply by. Reply to these first.", recipient + " AND overdue = true", nil},
		{"new", "New", "Referrals waiting for you to accept or decline.", recipient + " AND state = REQUESTED", func(r *pb.Referral) bool { return !r.Overdue }},
		{"waitlisted", "Waiting list", "People on your waiting list.", recipient + " AND state = ON_HOLD", nil},
		{"accepted", "Accepted", "Accepted, not yet started.", recipient + " AND state = ACCEPTED", nil},
		{"in-progress", "In progress", "People you are supporting now.", recipient + " AND state = IN_PROGRESS", nil},
	}
	var out []section
	for _, sec := range sections {
		if only != "" && only != sec.id {
			continue
		}
		req := &pb.ListReferralsRequest{Filter: sec.filter, PageSize: pageSize}
		if only == sec.id {
			req.PageToken = token
		}
		l, err := w.refs.ListReferrals(s.call(r), req)
		if err != nil {
			p := explain(err)
			pg := newPage(r, s, "Inbox")
			pg.Error = p.msg
			w.render(rw, p.code, "inbox.html", pg)
			return
		}
		v := section{ID: sec.id, Title: sec.title, Hint: sec.hint, Overdue: sec.id == "overdue"}
		for _, ref := range l.Referrals {
			if sec.keep == nil || sec.keep(ref) {
				v.Referrals = append(v.Referrals, ref)
			}
		}
		if l.NextPageToken != "" {
			v.Next = "/inbox?" + url.Values{"section": {sec.id}, "page": {l.NextPageToken}}.Encode()
		}
		out = append(out, v)
	}
	pg := newPage(r, s, "Inbox")
	pg.Content = struct {
		Sections []section
		Only     bool
	}{out, only != ""}
	w.render(rw, http.StatusOK, "inbox.html", pg)
}

// newPage is a page for the signed-in organisation, with the message of the
// action just done (?done=...), if any.
func newPage(r *http.Request, s *session, title string) page {
	done := r.URL.Query().Get("done")
	p := page{Title: title, Org: s.orgName, CSRF: s.csrf, Flash: flashes[done]}
	if p.Flash != "" {
		p.Done = done
	}
	return p
}

var flashes = map[string]string{
	"accept": "Accepted. The referrer has been told.", "decline": "Declined. The referrer has been told and can refer elsewhere.",
	"waitlist": "Put on your waiting list.", "start": "Marked as started.", "resume": "Taken off hold.",
	"complete": "Marked as finished.", "uptake": "Attendance recorded.", "note": "Note added.",
	"outcome": "Outcome recorded.", "capacity": "Capacity saved.",
}

// Referral.

type action struct {
	Name, Label string
	Primary     bool
	NeedsReason bool
}

type referralView struct {
	R           *pb.Referral
	Referrer    string
	Feedback    []*pb.Feedback
	Actions     []action
	CanDecline  bool
	CanWaitlist bool
	CanReport   bool
	Form        url.Values // values of the form that failed, to show again
	Fields      map[string]string
	Reasons     []pb.StateReasonCode
	Uptakes     []pb.UptakeStatus
	Instruments []instrumentOption
	Timepoints  []pb.Timepoint
}

type instrumentOption struct {
	Value pb.Instrument
	Hint  string
}

// allowed reports whether the caller may do a with r now, as the
// exchange says in r.actions: the pages copy no rule.
func allowed(r *pb.Referral, a pb.ReferralAction) bool { return slices.Contains(r.Actions, a) }

func (w *Web) referral(rw http.ResponseWriter, r *http.Request, s *session) {
	w.showReferral(rw, r, s, http.StatusOK, "", nil, nil)
}

func (w *Web) showReferral(rw http.ResponseWriter, r *http.Request, s *session, code int, msg string, fields map[string]string, form url.Values) {
	name := "referrals/" + r.PathValue("id")
	ref, err := w.refs.GetReferral(s.call(r), &pb.GetReferralRequest{Name: name})
	if err != nil {
		p := explain(err)
		pg := newPage(r, s, "Referral")
		pg.Error = p.msg
		w.render(rw, p.code, "error.html", pg)
		return
	}
	v := referralView{R: ref, Form: form, Fields: fields, Referrer: ref.Referrer}
	if o, err := w.dir.GetOrganization(s.call(r), &pb.GetOrganizationRequest{Name: ref.Referrer}); err == nil {
		v.Referrer = o.DisplayName
	}
	if l, err := w.fb.ListFeedback(s.call(r), &pb.ListFeedbackRequest{Parent: name, PageSize: 100}); err == nil {
		v.Feedback = l.Feedback
	}
	// The pages are the receiving side's: a referrer's moves (cancel)
	// are not offered here.
	if ref.Recipient == s.org {
		for _, a := range []struct {
			a       pb.ReferralAction
			name    string
			label   string
			primary bool
		}{
			{pb.ReferralAction_REFERRAL_ACTION_ACCEPT, "accept", "Accept", true},
			{pb.ReferralAction_REFERRAL_ACTION_START, "start", "Mark as started", true},
			{pb.ReferralAction_REFERRAL_ACTION_RESUME, "resume", "Take off hold", false},
			{pb.ReferralAction_REFERRAL_ACTION_COMPLETE, "complete", "Mark as finished", false},
		} {
			if allowed(ref, a.a) {
				v.Actions = append(v.Actions, action{Name: a.name, Label: a.label, Primary: a.primary})
			}
		}
		v.CanDecline = allowed(ref, pb.ReferralAction_REFERRAL_ACTION_REJECT)
		v.CanWaitlist = allowed(ref, pb.ReferralAction_REFERRAL_ACTION_HOLD)
		v.CanReport = allowed(ref, pb.ReferralAction_REFERRAL_ACTION_POST_UPTAKE_OR_OUTCOME)
	}
	for c := range pb.StateReasonCode_name {
		switch rc := pb.StateReasonCode(c); rc {
		case pb.StateReasonCode_STATE_REASON_CODE_UNSPECIFIED, pb.StateReasonCode_STATE_REASON_CODE_NO_RESPONSE, pb.StateReasonCode_STATE_REASON_CODE_CONSENT_WITHDRAWN:
		default:
			v.Reasons = append(v.Reasons, rc)
		}
	}
	sortEnums(v.Reasons)
	for u := range pb.UptakeStatus_name {
		if u != 0 {
			v.Uptakes = append(v.Uptakes, pb.UptakeStatus(u))
		}
	}
	sortEnums(v.Uptakes)
	for i := range pb.Instrument_name {
		if i != 0 {
			v.Instruments = append(v.Instruments, instrumentOption{pb.Instrument(i), pb.Instrument(i).Hint()})
		}
	}
	slices.SortFunc(v.Instruments, func(a, b instrumentOption) int { return int(a.Value - b.Value) })
	for t := range pb.Timepoint_name {
		if t != 0 {
			v.Timepoints = append(v.Timepoints, pb.Timepoint(t))
		}
	}
	sortEnums(v.Timepoints)
	pg := newPage(r, s, "Referral")
	pg.Error, pg.Content = msg, v
	w.render(rw, code, "referral.html", pg)
}

func sortEnums[E ~int32](v []E) { slices.Sort(v) }

func atoi(s string) int32 {
	n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	return int32(n)
}

// act carries out one form of the referral page.
func (w *Web) act(rw http.ResponseWriter, r *http.Request, s *session) {
	name := "referrals/" + r.PathValue("id")
	f := r.PostForm
	ctx := s.call(r)
	etag, rid := f.Get("etag"), f.Get("request_id")
	reason := &pb.StateReason{Code: pb.StateReasonCode(parseCode(pb.StateReasonCode(0).Descriptor(), f.Get("reason"))), Text: strings.TrimSpace(f.Get("reason_text"))}
	var err error
	switch action := r.PathValue("action"); action {
	case "accept":
		_, err = w.refs.AcceptReferral(ctx, &pb.AcceptReferralRequest{Name: name, Etag: etag, RequestId: rid})
	case "decline":
		_, err = w.refs.RejectReferral(ctx, &pb.RejectReferralRequest{Name: name, Etag: etag, RequestId: rid, Reason: reason})
	case "waitlist":
		_, err = w.refs.HoldReferral(ctx, &pb.HoldReferralRequest{Name: name, Etag: etag, RequestId: rid,
			Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY, Text: "on the waiting list"}})
	case "start":
		_, err = w.refs.StartReferral(ctx, &pb.StartReferralRequest{Name: name, Etag: etag, RequestId: rid})
	case "resume":
		_, err = w.refs.ResumeReferral(ctx, &pb.ResumeReferralRequest{Name: name, Etag: etag, RequestId: rid})
	case "complete":
		_, err = w.refs.CompleteReferral(ctx, &pb.CompleteReferralRequest{Name: name, Etag: etag, RequestId: rid})
	case "uptake":
		_, err = w.fb.CreateFeedback(ctx, &pb.CreateFeedbackRequest{Parent: name, RequestId: rid, Feedback: &pb.Feedback{
			Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{Status: pb.UptakeStatus(parseCode(pb.UptakeStatus(0).Descriptor(), f.Get("status"))),
				SessionsAttended: atoi(f.Get("sessions_attended"))}}}})
	case "note":
		_, err = w.fb.CreateFeedback(ctx, &pb.CreateFeedbackRequest{Parent: name, RequestId: rid, Feedback: &pb.Feedback{
			Content: &pb.Feedback_Note{Note: &pb.Note{Text: strings.TrimSpace(f.Get("text"))}}}})
	case "outcome":
		o := &pb.OutcomeMeasure{Instrument: pb.Instrument(parseCode(pb.Instrument(0).Descriptor(), f.Get("instrument"))),
			Timepoint: pb.Timepoint(parseCode(pb.Timepoint(0).Descriptor(), f.Get("timepoint"))), Total: atoi(f.Get("total"))}
		fields := map[string]string{}
		for _, item := range strings.FieldsFunc(f.Get("item_scores"), func(r rune) bool { return r == ',' || r == ' ' }) {
			n, perr := strconv.ParseInt(item, 10, 32)
			if perr != nil {
				fields["item_scores"] = "must be whole numbers separated by commas"
			}
			o.ItemScores = append(o.ItemScores, int32(n))
		}
		if vas := strings.TrimSpace(f.Get("vas")); vas != "" {
			n := atoi(vas)
			o.Vas = &n
		}
		if len(fields) > 0 {
			w.showReferral(rw, r, s, http.StatusBadRequest, "Some answers need correcting: see the messages next to them.", fields, f)
			return
		}
		_, err = w.fb.CreateFeedback(ctx, &pb.CreateFeedbackRequest{Parent: name, RequestId: rid, Feedback: &pb.Feedback{
			Content: &pb.Feedback_Outcome{Outcome: o}}})
	default:
		http.NotFound(rw, r)
		return
	}
	if err != nil {
		p := explain(err)
		w.showReferral(rw, r, s, p.code, p.msg, p.fields, f)
		return
	}
	http.Redirect(rw, r, "/"+name+"?done="+r.PathValue("action"), http.StatusSeeOther)
}

// Capacity.

type serviceCapacity struct {
	Service  *pb.Service
	Capacity *pb.Capacity
}

func (w *Web) capacity(rw http.ResponseWriter, r *http.Request, s *session) {
	w.showCapacity(rw, r, s, http.StatusOK, "", nil)
}

func (w *Web) showCapacity(rw http.ResponseWriter, r *http.Request, s *session, code int, msg string, fields map[string]string) {
	l, err := w.dir.ListServices(s.call(r), &pb.ListServicesRequest{Parent: s.org, PageSize: 100})
	if err != nil {
		p := explain(err)
		pg := newPage(r, s, "Capacity")
		pg.Error = p.msg
		w.render(rw, p.code, "error.html", pg)
		return
	}
	var out []serviceCapacity
	for _, svc := range l.Services {
		c, err := w.capac.GetCapacity(s.call(r), &pb.GetCapacityRequest{Name: svc.Name + "/capacity"})
		if err != nil {
			continue
		}
		out = append(out, serviceCapacity{svc, c})
	}
	var statuses []pb.CapacityStatus
	for st := range pb.CapacityStatus_name {
		if st != 0 {
			statuses = append(statuses, pb.CapacityStatus(st))
		}
	}
	sortEnums(statuses)
	pg := newPage(r, s, "Capacity")
	pg.Error = msg
	pg.Content = struct {
		Services []serviceCapacity
		Statuses []pb.CapacityStatus
		Fields   map[string]string
	}{out, statuses, fields}
	w.render(rw, code, "capacity.html", pg)
}

func (w *Web) setCapacity(rw http.ResponseWriter, r *http.Request, s *session) {
	f := r.PostForm
	_, err := w.capac.UpdateCapacity(s.call(r), &pb.UpdateCapacityRequest{
		Capacity: &pb.Capacity{Name: f.Get("name"), Etag: f.Get("etag"),
			Status:             pb.CapacityStatus(parseCode(pb.CapacityStatus(0).Descriptor(), f.Get("status"))),
			MaxActiveReferrals: atoi(f.Get("max_active_referrals")), Notes: strings.TrimSpace(f.Get("notes"))},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "max_active_referrals", "notes"}},
	})
	if err != nil {
		p := explain(err)
		w.showCapacity(rw, r, s, p.code, p.msg, p.fields)
		return
	}
	http.Redirect(rw, r, "/capacity?done=capacity", http.StatusSeeOther)
}
