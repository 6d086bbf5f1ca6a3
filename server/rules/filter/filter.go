// Package filter parses the list filters of the contract: a subset of
// AIP-160, `field = value` comparisons joined by AND, where a value is a
// bare word or a double-quoted string (with \" and \\ escapes). Which
// fields a list takes, and what each value must be, are data: a list
// names its Fields, and every list parses the same way.
package filter

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Field is a field a list may be filtered on.
type Field struct {
	Name string
	// Check says what is wrong with a value, or nil when it is good.
	Check func(value string) error
}

// Terms are the values of a parsed filter, by field.
type Terms map[string]string

// Parse parses filter against the fields a list takes. An empty filter has
// no terms. Each field may appear once.
func Parse(filter string, fields ...Field) (Terms, error) {
	terms := Terms{}
	p := &parser{in: filter}
	p.space()
	if p.done() {
		return terms, nil
	}
	for {
		name, err := p.word("a field name")
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(fields, func(f Field) bool { return f.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("cannot filter on %q; fields: %s", name, names(fields))
		}
		p.space()
		if !p.take("=") {
			return nil, fmt.Errorf("%q must be followed by = and a value (at %d)", name, p.pos)
		}
		p.space()
		value, err := p.value()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if _, dup := terms[name]; dup {
			return nil, fmt.Errorf("%q appears twice", name)
		}
		if check := fields[i].Check; check != nil {
			if err := check(value); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		terms[name] = value
		p.space()
		if p.done() {
			return terms, nil
		}
		if kw, _ := p.word("AND"); kw != "AND" {
			return nil, fmt.Errorf("terms are joined by AND (at %d)", p.pos)
		}
		p.space()
	}
}

func names(fields []Field) string {
	var out []string
	for _, f := range fields {
		out = append(out, f.Name)
	}
	return strings.Join(out, ", ")
}

type parser struct {
	in  string
	pos int
}

func (p *parser) done() bool { return p.pos >= len(p.in) }

func (p *parser) space() {
	for !p.done() && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t' || p.in[p.pos] == '\n') {
		p.pos++
	}
}

func (p *parser) take(s string) bool {
	if strings.HasPrefix(p.in[p.pos:], s) {
		p.pos += len(s)
		return true
	}
	return false
}

// word reads a field name or keyword: letters, digits and _.
func (p *parser) word(what string) (string, error) {
	start := p.pos
	for !p.done() {
		r := rune(p.in[p.pos])
		if r != '_' && (r > unicode.MaxASCII || !unicode.IsLetter(r) && !unicode.IsDigit(r)) {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", fmt.Errorf("expected %s at %d", what, start)
	}
	return p.in[start:p.pos], nil
}

// value reads a bare value (up to a space) or a quoted one.
func (p *parser) value() (string, error) {
	if p.take(`"`) {
		var b strings.Builder
		for !p.done() {
			c := p.in[p.pos]
			p.pos++
			switch {
			case c == '"':
				if b.Len() == 0 {
					return "", fmt.Errorf("an empty value")
				}
				return b.String(), nil
			case c == '\\' && !p.done() && (p.in[p.pos] == '"' || p.in[p.pos] == '\\'):
				b.WriteByte(p.in[p.pos])
				p.pos++
			default:
				b.WriteByte(c)
			}
		}
		return "", fmt.Errorf("a quoted value is not closed")
	}
	start := p.pos
	for !p.done() && p.in[p.pos] != ' ' && p.in[p.pos] != '\t' && p.in[p.pos] != '\n' && p.in[p.pos] != '"' {
		p.pos++
	}
	if p.pos == start {
		return "", fmt.Errorf("expected a value at %d", start)
	}
	return p.in[start:p.pos], nil
}

// Enum is the check of a field whose value is a code of enum d (its value
// name without the prefix, as written: REQUESTED), never UNSPECIFIED.
func Enum(d protoreflect.EnumDescriptor) func(string) error {
	return func(v string) error {
		if n, ok := pb.ParseCode(d, v); !ok || pb.EnumPrefix(d)+v != string(d.Values().ByNumber(n).Name()) {
			return fmt.Errorf("must be one of %s", strings.Join(pb.Codes(d), ", "))
		}
		return nil
	}
}

// Bool is the check of a field whose value is true or false.
func Bool(v string) error {
	if v != "true" && v != "false" {
		return fmt.Errorf("must be true or false")
	}
	return nil
}
