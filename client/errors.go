package client

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Reason returns the exchange's stable reason for err (the ErrorInfo
// reason, e.g. "CONSENT_REQUIRED"), or "" when it has none.
func Reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// Describe puts an error from the exchange in words for a person: its
// status code, its reason, its message and, one per line, the fields that
// were wrong.
//
//	INVALID_ARGUMENT (FIELD_INVALID): invalid request: referral.person.nhs_number ...
//	  referral.person.nhs_number: must be 10 digits with a valid check digit
func Describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	var b strings.Builder
	b.WriteString(code.Code(st.Code()).String())
	if r := Reason(err); r != "" {
		fmt.Fprintf(&b, " (%s)", r)
	}
	b.WriteString(": " + st.Message())
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Description)
			}
		}
	}
	return b.String()
}
