package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

var jsonOut = protojson.MarshalOptions{Multiline: true, Indent: "  "}

// table says how a message is shown as a table row.
type table struct {
	heads []string
	row   func(proto.Message) []string
}

// tables has a table for every message the commands print.
var tables = map[protoreflect.FullName]table{}

// register adds the table of message type M.
func register[M proto.Message](heads []string, row func(M) []string) {
	var m M
	tables[m.ProtoReflect().Descriptor().FullName()] = table{heads, func(x proto.Message) []string { return row(x.(M)) }}
}

func init() {
	register([]string{"NAME", "KIND", "DISPLAY NAME", "ODS CODE", "CHARITY", "HSDS ID"}, func(o *pb.Organization) []string {
		return []string{o.Name, code(o.Kind), o.DisplayName, o.OdsCode, o.CharityNumber, o.HsdsId}
	})
	register([]string{"NAME", "DISPLAY NAME", "CATEGORIES", "AGES", "REPLY WITHIN", "HSDS ID"}, func(s *pb.Service) []string {
		return []string{s.Name, s.DisplayName, codeList(s.Categories), ages(s.Eligibility), duration(s.DefaultReplyWithin), s.HsdsId}
	})
	register([]string{"SERVICE", "DISPLAY NAME", "CAPACITY", "ACTIVE", "MAX", "CATEGORIES"}, func(m *pb.ServiceMatch) []string {
		return []string{m.Service.GetName(), m.Service.GetDisplayName(), code(m.Capacity.GetStatus()),
			num(m.Capacity.GetActiveReferrals()), num(m.Capacity.GetMaxActiveReferrals()), codeList(m.Service.GetCategories())}
	})
	register([]string{"NAME", "STATUS", "ACTIVE", "WAITLISTED", "MAX", "AUTOMATIC", "NOTES", "UPDATED"}, func(c *pb.Capacity) []string {
		return []string{c.Name, code(c.Status), strconv.Itoa(int(c.ActiveReferrals)), strconv.Itoa(int(c.WaitlistedReferrals)),
			num(c.MaxActiveReferrals), yes(c.StatusSetAutomatically), c.Notes, when(c.UpdateTime)}
	})
	register([]string{"NAME", "DISPLAY NAME", "CREATED", "REVOKED"}, func(k *pb.ApiKey) []string {
		return []string{k.Name, k.DisplayName, when(k.CreateTime), when(k.RevokeTime)}
	})
	register([]string{"NAME", "DISPLAY NAME", "SECRET"}, func(r *pb.CreateApiKeyResponse) []string {
		return []string{r.ApiKey.GetName(), r.ApiKey.GetDisplayName(), r.Secret}
	})
	register([]string{"NAME", "STATE", "REASON", "SERVICE", "REFERRER", "PERSON", "NHS NUMBER", "NEEDS", "REPLY BY", "OVERDUE", "ETAG"}, func(r *pb.Referral) []string {
		person := "(not shown: " + strings.ToLower(code(r.View)) + ")"
		if p := r.Person; p != nil {
			person = p.GivenName + " " + p.FamilyName
		}
		return []string{r.Name, code(r.State), reason(r.StateReason), r.RecipientService, r.Referrer, person,
			r.Person.GetNhsNumber(), codeList(r.Needs), when(r.ReplyBy), yes(r.Overdue), r.Etag}
	})
	register([]string{"NAME", "NHS NUMBER", "STATE", "PURPOSES", "SCOPE", "RECIPIENTS", "VALID UNTIL", "RECORDED BY"}, func(c *pb.Consent) []string {
		return []string{c.Name, c.NhsNumber, code(c.State), codeList(c.Purposes), code(c.RecipientScope),
			strings.Join(c.Recipients, ","), when(c.ValidUntil), c.RecordedBy}
	})
	register([]string{"NAME", "AUTHOR", "AUDIENCE", "CREATED", "KIND", "DETAIL"}, func(f *pb.Feedback) []string {
		kind, detail := "", ""
		switch c := f.Content.(type) {
		case *pb.Feedback_Note:
			kind, detail = "note", c.Note.Text
		case *pb.Feedback_Uptake:
			kind, detail = "uptake", code(c.Uptake.Status)
			if n := c.Uptake.SessionsAttended; n > 0 {
				detail += fmt.Sprintf(", sessions %d", n)
			}
		case *pb.Feedback_Outcome:
			o := c.Outcome
			kind, detail = "outcome", fmt.Sprintf("%s %s total %d", code(o.Instrument), code(o.Timepoint), o.Total)
			if o.Vas != nil {
				detail += fmt.Sprintf(" vas %d", *o.Vas)
			}
		}
		return []string{f.Name, f.Author, code(f.Audience), when(f.CreateTime), kind, detail}
	})
	register([]string{"SEQUENCE", "TIME", "TYPE", "RESOURCE", "ACTOR", "STATE"}, func(e *pb.Event) []string {
		return []string{strconv.FormatInt(e.Sequence, 10), when(e.EventTime), code(e.Type), e.Resource, e.Actor, code(e.State)}
	})
}

// print writes m: as JSON with -o json; else a list response as a table, one
// row per item, and any other message as a two-column table of its fields.
func (a *app) print(m proto.Message) error {
	if a.output == "json" {
		b, err := jsonOut.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	if items, typ, ok := listItems(m); ok {
		t, ok := tables[typ]
		if !ok {
			return fmt.Errorf("no table for %s", typ)
		}
		fmt.Fprintln(tw, strings.Join(t.heads, "\t"))
		for i := 0; i < items.Len(); i++ {
			fmt.Fprintln(tw, strings.Join(clean(t.row(items.Get(i).Message().Interface())), "\t"))
		}
		return tw.Flush()
	}
	t, ok := tables[m.ProtoReflect().Descriptor().FullName()]
	if !ok {
		return fmt.Errorf("no table for %s", m.ProtoReflect().Descriptor().FullName())
	}
	for i, v := range clean(t.row(m)) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", strings.ToLower(t.heads[i]), v)
		}
	}
	return tw.Flush()
}

// clean keeps a cell on one line so the table stays aligned.
func clean(cells []string) []string {
	for i, c := range cells {
		cells[i] = strings.Join(strings.Fields(c), " ")
	}
	return cells
}

// listItems returns the repeated message field of a List response and the
// name of its message type.
func listItems(m proto.Message) (protoreflect.List, protoreflect.FullName, bool) {
	r := m.ProtoReflect()
	if r.Descriptor().Fields().ByName("next_page_token") == nil {
		return nil, "", false
	}
	for i := 0; i < r.Descriptor().Fields().Len(); i++ {
		if f := r.Descriptor().Fields().Get(i); f.IsList() && f.Message() != nil {
			return r.Mutable(f).List(), f.Message().FullName(), true
		}
	}
	return nil, "", false
}

// pages are the paging flags of a list command.
type pages struct {
	size  int32
	token string
	all   bool
}

func pageFlags(cmd *cobra.Command) *pages {
	p := &pages{}
	cmd.Flags().Int32Var(&p.size, "page-size", 0, "at most this many per page (1-1000; the exchange's default 50 when 0)")
	cmd.Flags().StringVar(&p.token, "page-token", "", "the page after the one that printed this token")
	cmd.Flags().BoolVar(&p.all, "all", false, "fetch every page")
	return p
}

// list fetches one page, or every page with --all, and prints them as one
// response. When more pages remain, the token of the next is written to
// stderr.
func list[R proto.Message](a *app, cmd *cobra.Command, p *pages, fetch func(ctx context.Context, c *client.Client, size int32, token string) (R, error)) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	var all R
	token, first := p.token, true
	for {
		ctx, cancel := a.ctx(cmd)
		page, err := fetch(ctx, c, p.size, token)
		cancel()
		if err != nil {
			return err
		}
		r := page.ProtoReflect()
		next := r.Get(r.Descriptor().Fields().ByName("next_page_token")).String()
		if !p.all {
			all = page
			if next != "" {
				fmt.Fprintf(a.stderr, "more: add --page-token %s (or --all)\n", next)
			}
			break
		}
		if first {
			all, first = page, false
		} else {
			items, _, _ := listItems(all)
			more, _, _ := listItems(page)
			for i := 0; i < more.Len(); i++ {
				items.Append(more.Get(i))
			}
		}
		if next == "" {
			all.ProtoReflect().Clear(r.Descriptor().Fields().ByName("next_page_token"))
			break
		}
		token = next
	}
	return a.print(all)
}

// code is an enum value's code, or "" when unset.
func code(e protoreflect.Enum) string {
	if e.Number() == 0 {
		return ""
	}
	return pb.Code(e)
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().Local().Format("2006-01-02 15:04")
}

func duration(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

func num(n int32) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(int(n))
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

func ages(e *pb.Eligibility) string {
	switch {
	case e == nil || (e.MinAge == 0 && e.MaxAge == 0):
		return "any"
	case e.MaxAge == 0:
		return fmt.Sprintf("%d+", e.MinAge)
	}
	return fmt.Sprintf("%d-%d", e.MinAge, e.MaxAge)
}

func reason(r *pb.StateReason) string {
	if r == nil {
		return ""
	}
	s := code(r.Code)
	if r.Text != "" {
		s += ": " + r.Text
	}
	return s
}

// codes lists enum values by code.
func codeList[E interface{ protoreflect.Enum }](es []E) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = code(e)
	}
	return strings.Join(s, ",")
}
