package storage_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
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
		{"kv/kvtest", []reflect.Type{
			reflect.TypeFor[kv.Engine](), reflect.TypeFor[kv.Writer](), reflect.TypeFor[kv.Cursor]()}},
		{"storagetest", []reflect.Type{
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

// calls lists the method names the Go files of a directory call
// (x.Name(...)).
func calls(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	var out []string
	for _, path := range files {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					out = append(out, sel.Sel.Name)
				}
			}
			return true
		})
	}
	return out
}
