// Package layout holds the rule of which of the exchange's packages may
// import which (ARCHITECTURE.md, "Layers"), checked against the code.
package layout

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/social-prescribing/exchange/"

// layers: a package of the first prefix (the longest that matches) may
// import, of the module's own packages, only those under the prefixes
// listed. The rules import nothing that adapts them to the wire or the
// disk; storage reads the rules but not the API, and its engines know only
// the engine interface (kv); the HTTP face speaks to
// the exchange over gRPC, through the contract, never its internals.
var layers = []struct {
	pkg   string
	may   []string
	about string
}{
	{"proto/", nil, "the contract stands on nothing of ours"},
	{"internal/", nil, "helpers of the binaries"},
	{"server/rules/", []string{"proto/", "server/rules/"}, "rules are pure"},
	{"server/storage", []string{"proto/", "server/rules/", "server/storage"}, "storage keeps records and their indexes"},
	{"server/storage/kv", []string{"server/storage/kv"}, "the engine interface stands on nothing of ours"},
	{"server/storage/bolt", []string{"=server/storage/kv"}, "an engine knows the engine interface, never the records above it"},
	{"server/storage/etcd", []string{"=server/storage/kv"}, "an engine knows the engine interface, never the records above it"},
	{"server/storage/etcd/etcdtest", nil, "a test rig: etcd members"},
	{"server/api", []string{"proto/", "server/rules/", "=server/storage"}, "the services, over any store: the interface, never a backend"},
	{"server/metrics", []string{"proto/", "server/rules/", "=server/storage"}, "metrics read the store through its interface"},
	{"server/demo", []string{"proto/", "server/api", "server/rules/"}, "the demo data goes through the services, as any caller"},
	{"server/exchangetest", []string{"proto/", "server/", "tools/loadtest/workload"}, "a test rig: a real exchange"},
	{"server", []string{"proto/", "server/", "gateway", "internal/"}, "the daemon wires everything but the tools"},
	{"gateway", []string{"proto/", "gateway", "client/reports"}, "the HTTP face knows the contract alone, over gRPC"},
	{"client", []string{"proto/", "client", "internal/"}, "the client knows only the contract"},
	{"tools/", []string{"proto/", "tools/"}, "measurement, outside the product"},
}

func TestUnder(t *testing.T) {
	for _, tc := range []struct {
		pkg, prefix string
		want        bool
	}{
		{"server/rules/policy", "server/rules/", true},
		{"server/rulesx", "server/rules/", false},
		{"server/storage/bolt", "server/storage", true},
		{"server/storage/bolt", "=server/storage", false},
		{"server/storage", "=server/storage", true},
		{"gateway/web", "gateway", true},
		{"gatewayx", "gateway", false},
	} {
		if got := under(tc.pkg, tc.prefix); got != tc.want {
			t.Errorf("under(%q, %q) = %v", tc.pkg, tc.prefix, got)
		}
	}
}

func TestImportsFollowTheLayers(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, module)
		layer := -1
		for i, l := range layers {
			if under(pkg, l.pkg) && (layer < 0 || len(l.pkg) > len(layers[layer].pkg)) {
				layer = i
			}
		}
		if layer < 0 {
			t.Errorf("%s is in no layer: add it to layers and ARCHITECTURE.md", pkg)
			continue
		}
		seen++
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			ok := false
			for _, may := range layers[layer].may {
				ok = ok || under(dep, may)
			}
			if !ok {
				t.Errorf("%s imports %s: %s (%s)", pkg, dep, layers[layer].about, layers[layer].pkg)
			}
		}
	}
	if seen < 10 {
		t.Errorf("only %d packages listed", seen)
	}
}

// under: pkg is prefix (a folder when it ends in /, that package alone
// when it starts with =, else that package or one below it).
func under(pkg, prefix string) bool {
	if exact, ok := strings.CutPrefix(prefix, "="); ok {
		return pkg == exact
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(pkg+"/", prefix)
	}
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}
