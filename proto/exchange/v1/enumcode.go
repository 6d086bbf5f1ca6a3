package exchangev1

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Every enum value carries its enum's prefix (buf lint requires it) and the
// zero value is PREFIX_UNSPECIFIED. People and forms use the value without
// the prefix: its code. REFERRAL_STATE_IN_PROGRESS has the code IN_PROGRESS.

// EnumPrefix is the prefix every value of enum d carries, e.g.
// "REFERRAL_STATE_".
func EnumPrefix(d protoreflect.EnumDescriptor) string {
	return strings.TrimSuffix(string(d.Values().ByNumber(0).Name()), "UNSPECIFIED")
}

// Code is an enum value's name without its prefix, or "" for a number the
// enum does not define.
func Code(e protoreflect.Enum) string {
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return ""
	}
	return strings.TrimPrefix(string(v.Name()), EnumPrefix(e.Descriptor()))
}

// ParseCode returns the number of the value of enum d named s: its code or
// its full name, in any case, with hyphens or spaces for underscores
// ("in-progress", "IN_PROGRESS", "REFERRAL_STATE_IN_PROGRESS"). It reports
// false for anything else, including the UNSPECIFIED value.
func ParseCode(d protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, bool) {
	s = strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(strings.TrimSpace(s)))
	for _, name := range []string{s, EnumPrefix(d) + s} {
		if v := d.Values().ByName(protoreflect.Name(name)); v != nil && v.Number() != 0 {
			return v.Number(), true
		}
	}
	return 0, false
}

// Codes lists the codes of enum d's values, UNSPECIFIED left out, in number
// order.
func Codes(d protoreflect.EnumDescriptor) []string {
	var codes []string
	for i := 0; i < d.Values().Len(); i++ {
		if v := d.Values().Get(i); v.Number() != 0 {
			codes = append(codes, strings.TrimPrefix(string(v.Name()), EnumPrefix(d)))
		}
	}
	return codes
}

// Label is an enum value in words, for people: REFERRAL_STATE_IN_PROGRESS
// is "In progress". "" for the UNSPECIFIED value.
func Label(e protoreflect.Enum) string {
	s := strings.ToLower(strings.ReplaceAll(Code(e), "_", " "))
	if s == "" || e.Number() == 0 {
		return ""
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
