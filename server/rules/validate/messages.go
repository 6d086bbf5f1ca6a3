package validate

import (
	"fmt"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
)

// Contact checks an organisation or service contact.
func Contact(v *Violations, field string, c *pb.Contact) {
	if c == nil {
		return
	}
	Email(v, field+".email", c.Email)
	Phone(v, field+".phone", c.Phone)
	URL(v, field+".website", c.Website)
	Lines(v, field+".address_lines", c.AddressLines, 6, 100)
	Postcode(v, field+".postcode", &c.Postcode, false)
}

// Organization checks an organisation's writable fields.
func Organization(v *Violations, field string, o *pb.Organization, create bool) {
	if o == nil {
		v.Add(field, "is required")
		return
	}
	if create {
		Enum(v, field+".kind", o.Kind, true)
		if o.Kind == pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR {
			v.Add(field+".kind", "OPERATOR is created by the exchange itself")
		}
	}
	Text(v, field+".display_name", o.DisplayName, 200, true)
	if o.OdsCode != "" && !odsRE.MatchString(o.OdsCode) {
		v.Add(field+".ods_code", "must be 3-10 upper-case letters and digits")
	}
	Text(v, field+".charity_number", o.CharityNumber, 20, false)
	Text(v, field+".hsds_id", o.HsdsId, 100, false)
	Contact(v, field+".contact", o.Contact)
}

// Service checks a service's writable fields.
func Service(v *Violations, field string, s *pb.Service) {
	if s == nil {
		v.Add(field, "is required")
		return
	}
	Text(v, field+".display_name", s.DisplayName, 200, true)
	Text(v, field+".description", s.Description, 4000, false)
	EnumList(v, field+".categories", s.Categories, 1, 15)
	if e := s.Eligibility; e != nil {
		if e.MinAge < 0 || e.MinAge > 130 {
			v.Add(field+".eligibility.min_age", "must be between 0 and 130")
		}
		if e.MaxAge < 0 || e.MaxAge > 130 || (e.MaxAge != 0 && e.MaxAge < e.MinAge) {
			v.Add(field+".eligibility.max_age", "must be between min_age and 130, or 0 for no limit")
		}
		Districts(v, field+".eligibility.postcode_districts", e.PostcodeDistricts)
		Text(v, field+".eligibility.notes", e.Notes, 1000, false)
	}
	EnumList(v, field+".delivery_modes", s.DeliveryModes, 0, 4)
	Contact(v, field+".contact", s.Contact)
	if d := s.DefaultReplyWithin; d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < time.Hour || d.AsDuration() > 90*24*time.Hour {
			v.Add(field+".default_reply_within", "must be between 1 hour and 90 days")
		}
	}
	Text(v, field+".hsds_id", s.HsdsId, 100, false)
}

// Capacity checks a capacity's writable fields.
func Capacity(v *Violations, field string, c *pb.Capacity) {
	if c == nil {
		v.Add(field, "is required")
		return
	}
	Enum(v, field+".status", c.Status, true)
	if c.MaxActiveReferrals < 0 || c.MaxActiveReferrals > 100000 {
		v.Add(field+".max_active_referrals", "must be between 0 (no maximum) and 100000")
	}
	Text(v, field+".notes", c.Notes, 1000, false)
}

// Person checks and normalises the person of a referral.
func Person(v *Violations, field string, p *pb.Person, now time.Time) {
	if p == nil {
		v.Add(field, "is required")
		return
	}
	NHS(v, field+".nhs_number", &p.NhsNumber)
	Text(v, field+".given_name", p.GivenName, 100, true)
	Text(v, field+".family_name", p.FamilyName, 100, true)
	DateOfBirth(v, field+".date_of_birth", p.DateOfBirth, now)
	Enum(v, field+".sex", p.Sex, false)
	Phone(v, field+".phone", p.Phone)
	Email(v, field+".email", p.Email)
	Lines(v, field+".address_lines", p.AddressLines, 6, 100)
	Postcode(v, field+".postcode", &p.Postcode, true)
	Enum(v, field+".preferred_contact_method", p.PreferredContactMethod, false)
	Language(v, field+".language", p.Language)
	Text(v, field+".accessibility_needs", p.AccessibilityNeeds, 1000, false)
}

// NewReferral checks the fields a referrer supplies on CreateReferral.
func NewReferral(v *Violations, field string, r *pb.Referral, now time.Time) {
	if r == nil {
		v.Add(field, "is required")
		return
	}
	if _, _, ok := names.Service(r.RecipientService); !ok {
		v.Add(field+".recipient_service", "must be a service name, organizations/{organization}/services/{service}")
	}
	if r.ParentReferral != "" {
		if _, ok := names.Referral(r.ParentReferral); !ok {
			v.Add(field+".parent_referral", "must be a referral name, referrals/{referral}")
		}
	}
	Person(v, field+".person", r.Person, now)
	Enum(v, field+".route", r.Route, true)
	EnumList(v, field+".needs", r.Needs, 1, 15)
	Text(v, field+".reason", r.Reason, 4000, false)
	Enum(v, field+".support_level", r.SupportLevel, true)
	if _, ok := names.Consent(r.Consent); !ok {
		v.Add(field+".consent", "is required: the consent the referral relies on, consents/{consent}")
	}
	if r.ReplyBy != nil {
		if err := r.ReplyBy.CheckValid(); err != nil {
			v.Add(field+".reply_by", "must be a valid time")
		} else if d := r.ReplyBy.AsTime().Sub(now); d < time.Hour || d > 90*24*time.Hour {
			v.Add(field+".reply_by", "must be between 1 hour and 90 days from now")
		}
	}
}

// StateReason checks a reason given with a state method.
func StateReason(v *Violations, field string, r *pb.StateReason, required bool) {
	if r == nil || r.Code == pb.StateReasonCode_STATE_REASON_CODE_UNSPECIFIED {
		if required {
			v.Add(field+".code", "is required for this move: one of %s", enumNames(pb.StateReasonCode_STATE_REASON_CODE_OTHER))
		}
		if r != nil {
			Text(v, field+".text", r.Text, 1000, false)
		}
		return
	}
	Enum(v, field+".code", r.Code, true)
	switch r.Code {
	case pb.StateReasonCode_STATE_REASON_CODE_CONSENT_WITHDRAWN:
		v.Add(field+".code", "CONSENT_WITHDRAWN is set only by the exchange: withdraw the consent instead")
	case pb.StateReasonCode_STATE_REASON_CODE_ERASED:
		v.Add(field+".code", "ERASED is set only by the exchange, on an erasure of the person")
	}
	Text(v, field+".text", r.Text, 1000, r.Code == pb.StateReasonCode_STATE_REASON_CODE_OTHER)
}

// NewConsent checks the fields of CreateConsent.
func NewConsent(v *Violations, field string, c *pb.Consent, now time.Time) {
	if c == nil {
		v.Add(field, "is required")
		return
	}
	NHS(v, field+".nhs_number", &c.NhsNumber)
	Enum(v, field+".method", c.Method, true)
	EnumList(v, field+".purposes", c.Purposes, 1, 3)
	hasDirectCare := false
	for _, p := range c.Purposes {
		hasDirectCare = hasDirectCare || p == pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE
	}
	if !hasDirectCare {
		v.Add(field+".purposes", "must include DIRECT_CARE: a referral cannot be shared without it")
	}
	Enum(v, field+".recipient_scope", c.RecipientScope, true)
	switch c.RecipientScope {
	case pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS:
		if len(c.Recipients) == 0 || len(c.Recipients) > 20 {
			v.Add(field+".recipients", "must name 1-20 organisations with scope NAMED_ORGANIZATIONS")
		}
		for i, r := range c.Recipients {
			if _, ok := names.Organization(r); !ok {
				v.Add(fmt.Sprintf("%s.recipients[%d]", field, i), "must be an organisation name, organizations/{organization}")
			}
		}
	default:
		if len(c.Recipients) > 0 {
			v.Add(field+".recipients", "must be empty unless recipient_scope is NAMED_ORGANIZATIONS")
		}
	}
	if c.ValidFrom != nil && c.ValidFrom.CheckValid() != nil {
		v.Add(field+".valid_from", "must be a valid time")
	}
	if c.ValidUntil != nil {
		from := now
		if c.ValidFrom != nil {
			from = c.ValidFrom.AsTime()
		}
		if c.ValidUntil.CheckValid() != nil || !c.ValidUntil.AsTime().After(from) {
			v.Add(field+".valid_until", "must be after valid_from")
		}
	}
}

// Outcome checks an outcome measure against its instrument's ranges and
// fills in the total from the items.
func Outcome(v *Violations, field string, o *pb.OutcomeMeasure, now time.Time) {
	Enum(v, field+".instrument", o.Instrument, true)
	Enum(v, field+".timepoint", o.Timepoint, true)
	in, ok := pb.Scales[o.Instrument]
	if !ok {
		return
	}
	name := o.Instrument.String()[len("INSTRUMENT_"):]
	hasTotal := in.TotalMax > 0
	switch {
	case len(o.ItemScores) == 0 && hasTotal:
		if o.Total < in.TotalMin || o.Total > in.TotalMax {
			v.Add(field+".total", "%s total must be between %d and %d (or give the %d item scores)", name, in.TotalMin, in.TotalMax, in.Items)
		}
	case len(o.ItemScores) != in.Items:
		v.Add(field+".item_scores", "%s needs exactly %d item scores", name, in.Items)
	default:
		var sum int32
		bad := false
		for i, s := range o.ItemScores {
			if s < in.ItemMin || s > in.ItemMax {
				v.Add(fmt.Sprintf("%s.item_scores[%d]", field, i), "%s items are scored %d-%d", name, in.ItemMin, in.ItemMax)
				bad = true
			}
			sum += s
		}
		if hasTotal && !bad {
			if o.Total != 0 && o.Total != sum {
				v.Add(field+".total", "is %d but the items add up to %d", o.Total, sum)
			}
			o.Total = sum
		}
	}
	if !hasTotal && o.Total != 0 {
		v.Add(field+".total", "%s has no total: give the item scores", name)
	}
	switch {
	case in.VAS && o.Vas == nil:
		v.Add(field+".vas", "EQ5D5L needs the visual analogue scale, 0-100")
	case in.VAS && (*o.Vas < 0 || *o.Vas > 100):
		v.Add(field+".vas", "must be between 0 and 100")
	case !in.VAS && o.Vas != nil:
		v.Add(field+".vas", "is only for EQ5D5L")
	}
	if o.MeasureTime != nil && (o.MeasureTime.CheckValid() != nil || o.MeasureTime.AsTime().After(now.Add(5*time.Minute))) {
		v.Add(field+".measure_time", "must be a valid time, not in the future")
	}
}

// Feedback checks a feedback entry.
func Feedback(v *Violations, field string, f *pb.Feedback, now time.Time) {
	if f == nil {
		v.Add(field, "is required")
		return
	}
	Enum(v, field+".audience", f.Audience, false)
	switch c := f.Content.(type) {
	case *pb.Feedback_Note:
		Text(v, field+".note.text", c.Note.GetText(), 4000, true)
	case *pb.Feedback_Uptake:
		u := c.Uptake
		if u == nil {
			u = &pb.Uptake{}
			c.Uptake = u
		}
		Enum(v, field+".uptake.status", u.Status, true)
		if u.SessionsAttended < 0 || u.SessionsAttended > 1000 {
			v.Add(field+".uptake.sessions_attended", "must be between 0 and 1000")
		}
		if u.Status == pb.UptakeStatus_UPTAKE_STATUS_SESSIONS_ATTENDED && u.SessionsAttended < 1 {
			v.Add(field+".uptake.sessions_attended", "must be at least 1 with SESSIONS_ATTENDED")
		}
		if u.Status == pb.UptakeStatus_UPTAKE_STATUS_FIRST_SESSION_ATTENDED && u.SessionsAttended == 0 {
			u.SessionsAttended = 1
		}
		if u.OccurTime != nil && (u.OccurTime.CheckValid() != nil || u.OccurTime.AsTime().After(now.Add(5*time.Minute))) {
			v.Add(field+".uptake.occur_time", "must be a valid time, not in the future")
		}
	case *pb.Feedback_Outcome:
		if c.Outcome == nil {
			c.Outcome = &pb.OutcomeMeasure{}
		}
		Outcome(v, field+".outcome", c.Outcome, now)
	default:
		v.Add(field, "needs exactly one of note, uptake or outcome")
	}
}
