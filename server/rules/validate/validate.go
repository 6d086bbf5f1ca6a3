// Package validate checks requests field by field. Every check appends a
// field violation naming the field by its path in the request, so a caller
// sees all that is wrong at once; nothing is written when any is found.
// Validators also normalise what they accept (NHS numbers without spaces,
// postcodes in upper case) so the store holds one spelling.
package validate

import (
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/social-prescribing/exchange/server/rules/names"
)

// Violations collects field violations.
type Violations []*errdetails.BadRequest_FieldViolation

// Add records that field is invalid, with a reason a person can act on.
func (v *Violations) Add(field, format string, args ...any) {
	*v = append(*v, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// Limits shared by several messages.
const (
	MaxPageSize     = 1000
	MaxRequestIDLen = 64
)

// PageSize returns the page size to use, or records a violation.
func PageSize(v *Violations, field string, n int32, def int) int {
	switch {
	case n < 0 || n > MaxPageSize:
		v.Add(field, "must be between 0 and %d", MaxPageSize)
		return def
	case n == 0:
		return def
	}
	return int(n)
}

// RequestID checks a request_id: optional, at most 64 printable ASCII characters.
func RequestID(v *Violations, field, id string, required bool) {
	if id == "" {
		if required {
			v.Add(field, "is required: a unique id for this request (a UUID), reused only when retrying it")
		}
		return
	}
	if len(id) > MaxRequestIDLen {
		v.Add(field, "must be at most %d characters", MaxRequestIDLen)
		return
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			v.Add(field, "must be printable ASCII without spaces")
			return
		}
	}
}

// ResourceID checks a caller-chosen id such as organization_id.
func ResourceID(v *Violations, field, id string) {
	if !names.ChosenID(id) {
		v.Add(field, "must be 3-63 characters of lower-case letters, digits and hyphens, starting with a letter")
	}
}

// Text checks a free-text field's length (in characters) and that it is
// valid UTF-8; required text must not be blank.
func Text(v *Violations, field, s string, max int, required bool) {
	if msg := textProblem(s, max, required); msg != "" {
		v.Add(field, "%s", msg)
	}
}

// textProblem says what is wrong with a text field, or returns "".
func textProblem(s string, max int, required bool) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case required && strings.TrimSpace(s) == "":
		return "is required"
	case len(s) > max && utf8.RuneCountInString(s) > max: // never more characters than bytes
		return fmt.Sprintf("must be at most %d characters", max)
	}
	return ""
}

// at names element i of a repeated field; called only for a violation, so
// that valid input costs no formatting.
func at(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// Lines checks address-like lists of lines.
func Lines(v *Violations, field string, lines []string, maxLines, maxLen int) {
	if len(lines) > maxLines {
		v.Add(field, "must have at most %d lines", maxLines)
	}
	for i, l := range lines {
		if msg := textProblem(l, maxLen, false); msg != "" {
			v.Add(at(field, i), "%s", msg)
		}
	}
}

// Enum checks that e is a defined, non-zero value.
func Enum(v *Violations, field string, e protoreflect.Enum, required bool) {
	if msg := enumProblem(e, required); msg != "" {
		v.Add(field, "%s", msg)
	}
}

// enumProblem says what is wrong with an enum value, or returns "".
func enumProblem(e protoreflect.Enum, required bool) string {
	n := e.Number()
	switch {
	case n == 0 && required:
		return "is required: one of " + enumNames(e)
	case n != 0 && e.Descriptor().Values().ByNumber(n) == nil:
		return fmt.Sprintf("%d is not one of %s", n, enumNames(e))
	}
	return ""
}

func enumNames(e protoreflect.Enum) string {
	vals := e.Descriptor().Values()
	var names []string
	for i := 1; i < vals.Len(); i++ {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

// EnumList checks a repeated enum: each defined and non-zero, no repeats,
// count within [min, max].
func EnumList[E interface {
	comparable
	protoreflect.Enum
}](v *Violations, field string, list []E, min, max int) {
	if len(list) < min {
		v.Add(field, "needs at least %d value(s)", min)
	}
	if len(list) > max {
		v.Add(field, "must have at most %d values", max)
	}
	seen := map[E]bool{}
	for i, e := range list {
		if msg := enumProblem(e, true); msg != "" {
			v.Add(at(field, i), "%s", msg)
		}
		if seen[e] {
			v.Add(at(field, i), "repeats %v", e)
		}
		seen[e] = true
	}
}

// NHSNumber returns the NHS number without spaces and whether it is valid:
// 10 digits whose last is the modulus 11 check digit of the first nine.
func NHSNumber(s string) (string, bool) {
	n := strings.ReplaceAll(strings.ReplaceAll(s, " ", ""), "-", "")
	if len(n) != 10 {
		return n, false
	}
	sum := 0
	for i := 0; i < 10; i++ {
		if n[i] < '0' || n[i] > '9' {
			return n, false
		}
		if i < 9 {
			sum += int(n[i]-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	if check == 10 {
		return n, false
	}
	return n, check == int(n[9]-'0')
}

// NHS checks and normalises an NHS number field in place.
func NHS(v *Violations, field string, s *string) {
	n, ok := NHSNumber(*s)
	if *s == "" {
		v.Add(field, "is required")
		return
	}
	if !ok {
		v.Add(field, "must be a 10-digit NHS number with a valid check digit")
		return
	}
	*s = n
}

var postcodeRE = regexp.MustCompile(`^([A-Z]{1,2}[0-9][0-9A-Z]?) ?([0-9][A-Z]{2})$`)
var districtRE = regexp.MustCompile(`^[A-Z]{1,2}[0-9][0-9A-Z]?$`)

// NormalisePostcode returns a UK postcode in upper case with one space, and
// whether it is well formed.
func NormalisePostcode(s string) (string, bool) {
	p := strings.ToUpper(strings.Join(strings.Fields(s), ""))
	if len(p) < 5 {
		return p, false
	}
	p = p[:len(p)-3] + " " + p[len(p)-3:]
	return p, postcodeRE.MatchString(p)
}

// District returns the outward code (district) of a full postcode or a
// district, upper case, or "" if s is neither.
func District(s string) string {
	if p, ok := NormalisePostcode(s); ok {
		return p[:strings.IndexByte(p, ' ')]
	}
	d := strings.ToUpper(strings.TrimSpace(s))
	if districtRE.MatchString(d) {
		return d
	}
	return ""
}

// Postcode checks and normalises a postcode field in place.
func Postcode(v *Violations, field string, s *string, required bool) {
	if *s == "" {
		if required {
			v.Add(field, "is required")
		}
		return
	}
	p, ok := NormalisePostcode(*s)
	if !ok {
		v.Add(field, "must be a UK postcode such as M14 5AB")
		return
	}
	*s = p
}

// Districts checks and normalises a list of postcode districts in place.
func Districts(v *Violations, field string, ds []string) {
	if len(ds) > 200 {
		v.Add(field, "must have at most 200 districts")
	}
	for i := range ds {
		d := strings.ToUpper(strings.TrimSpace(ds[i]))
		if !districtRE.MatchString(d) {
			v.Add(at(field, i), "must be a postcode district such as M14")
			continue
		}
		ds[i] = d
	}
}

// DateOfBirth checks a YYYY-MM-DD date: a real date, not in the future, not
// before 1900.
func DateOfBirth(v *Violations, field, s string, now time.Time) {
	if s == "" {
		v.Add(field, "is required")
		return
	}
	d, err := time.Parse("2006-01-02", s)
	switch {
	case err != nil:
		v.Add(field, "must be a date written YYYY-MM-DD")
	case d.After(now):
		v.Add(field, "must not be in the future")
	case d.Year() < 1900:
		v.Add(field, "must not be before 1900")
	}
}

// Age returns the age in whole years on date now of someone born on dob
// (YYYY-MM-DD), or -1 if dob does not parse.
func Age(dob string, now time.Time) int {
	d, err := time.Parse("2006-01-02", dob)
	if err != nil {
		return -1
	}
	age := now.Year() - d.Year()
	if now.Month() < d.Month() || (now.Month() == d.Month() && now.Day() < d.Day()) {
		age--
	}
	return age
}

// Email checks an optional email address.
func Email(v *Violations, field, s string) {
	if s == "" {
		return
	}
	if len(s) > 254 {
		v.Add(field, "must be at most 254 characters")
		return
	}
	if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
		v.Add(field, "must be an email address such as name@example.org")
	}
}

var phoneRE = regexp.MustCompile(`^\+?[0-9 ()-]{6,32}$`)

// Phone checks an optional telephone number.
func Phone(v *Violations, field, s string) {
	if s != "" && !phoneRE.MatchString(s) {
		v.Add(field, "must be a telephone number of digits, spaces and brackets, at most 32 characters")
	}
}

// URL checks an optional https or http URL.
func URL(v *Violations, field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(s) > 2048 {
		v.Add(field, "must be an http(s) URL of at most 2048 characters")
	}
}

var odsRE = regexp.MustCompile(`^[A-Z0-9]{3,10}$`)

var langRE = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$`)

// Language checks an optional BCP 47 tag.
func Language(v *Violations, field, s string) {
	if s != "" && (len(s) > 35 || !langRE.MatchString(s)) {
		v.Add(field, "must be a BCP 47 language tag such as en or pl")
	}
}
