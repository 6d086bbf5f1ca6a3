package reports_test

import (
	"bytes"
	"encoding/csv"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/social-prescribing/exchange/client/reports"
)

// TestSafeCell: OWASP's rule for CSV injection, with plain numbers left
// alone (issue 25, defect 7).
func TestSafeCell(t *testing.T) {
	for in, want := range map[string]string{
		"Health walks": "Health walks", "": "",
		"=cmd|' /C calc'!A0": "'=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0": "'@SUM(1+1)*cmd|' /C calc'!A0",
		"+1+cmd": "'+1+cmd", "-2+3": "'-2+3", "\tx": "'\tx", "\r=x": "'\r=x",
		"-0.42": "-0.42", "+3": "+3", "-1e-3": "-1e-3", "-Inf": "'-Inf", "-0x1p-2": "'-0x1p-2", "<5": "<5",
	} {
		if got := reports.SafeCell(in); got != want {
			t.Errorf("SafeCell(%q) = %q, want %q", in, got, want)
		}
	}
	var b bytes.Buffer
	if err := reports.WriteCSV(&b, reports.Table{Header: []string{"Service", "n"}, Rows: [][]string{{"=HYPERLINK(\"x\")", "-1"}}}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil || rows[1][0] != `'=HYPERLINK("x")` || rows[1][1] != "-1" {
		t.Fatalf("WriteCSV wrote %q, %v", rows, err)
	}
}

// TestOneCSVWriter: WriteCSV is the only place the exchange writes CSV, so
// every cell goes through SafeCell.
func TestOneCSVWriter(t *testing.T) {
	grep := exec.Command("git", "grep", "-l", "csv.NewWriter", "--", ":/*.go", ":/!*_test.go")
	out, err := grep.Output()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("git grep: %v", err)
		}
		t.Skipf("git grep: %v (not a git checkout?)", err)
	}
	if files := strings.Fields(string(out)); len(files) != 1 || !strings.HasSuffix(files[0], "tables.go") {
		t.Fatalf("CSV is written in %q; write it only through reports.WriteCSV", files)
	}
}
