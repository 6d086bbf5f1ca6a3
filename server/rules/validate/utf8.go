package validate

import (
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// BadUTF8 returns the path of the first string field of m that is not
// valid UTF-8 ("referral.person.given_name", "needs[2]", "labels[key]"),
// and whether there is one. Messages decoded from the wire are checked by
// protobuf itself; this is for those built another way (the REST gateway's
// path and query parameters, copied in process), which would otherwise
// reach the store and fail there.
func BadUTF8(m protoreflect.Message) (string, bool) {
	var path string
	var bad bool
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && !bad; i++ {
				path, bad = badValue(at(name, i), fd, l.Get(i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if s, ok := k.Interface().(string); ok && !utf8.ValidString(s) {
					path, bad = name, true
				} else {
					path, bad = badValue(name+"["+strconv.Quote(k.String())+"]", fd.MapValue(), mv)
				}
				return !bad
			})
		default:
			path, bad = badValue(name, fd, v)
		}
		return !bad
	})
	return path, bad
}

func badValue(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) (string, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			return path, true
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if p, bad := BadUTF8(v.Message()); bad {
			return path + "." + p, true
		}
	}
	return "", false
}
