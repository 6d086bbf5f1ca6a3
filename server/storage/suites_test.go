package storage_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"testing"

	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// TestSuitesCallEveryMethod: the conformance suites call every method of
// the interfaces they hold engines and the typed layer to, so that no
// method goes untested on any engine.
func TestSuitesCallEveryMethod(t *testing.T) {
	for _, c := range []struct {
		suite  string
		ifaces []reflect.Type
	}{
		{"kv/kvtest/kvtest.go", []reflect.Type{
			reflect.TypeFor[kv.Engine](), reflect.TypeFor[kv.Writer](), reflect.TypeFor[kv.Cursor]()}},
		{"storagetest/storagetest.go", []reflect.Type{
			reflect.TypeFor[storage.Store](), reflect.TypeFor[storage.WriteTx]()}},
	} {
		called := calls(t, c.suite)
		for _, it := range c.ifaces {
			for i := range it.NumMethod() {
				if m := it.Method(i).Name; !slices.Contains(called, m) {
					t.Errorf("%s never calls %s.%s", c.suite, it.Name(), m)
				}
			}
		}
	}
}

// calls lists the method names a Go file calls (x.Name(...)).
func calls(t *testing.T, path string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
				out = append(out, sel.Sel.Name)
			}
		}
		return true
	})
	return out
}
