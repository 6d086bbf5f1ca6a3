package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestMedianOf(t *testing.T) {
	id := func(x float64) float64 { return x }
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{0.52, 0.66, 0.55, 0.65, 0.52}, 0.55},
	} {
		if got := medianOf(tc.in, id); got != tc.want {
			t.Errorf("medianOf(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// The targets at 64 clients take the medians of the rounds when there are
// rounds, and the single runs of the table when there are none.
func TestReportJudgesSixtyFourClientsOnRounds(t *testing.T) {
	results := []result{
		{Target: "CreateReferral gRPC", Clients: 64, PerSecond: 4000, P99Ms: 40},
		{Target: "CreateReferral REST", Clients: 64, PerSecond: 3000, P99Ms: 50},
		{Target: "etcd put", Clients: 64, PerSecond: 2000, P99Ms: 20},
		{Target: "gRPC echo (ceiling)", Clients: 64, PerSecond: 8000, P99Ms: 10},
	}
	mk := func(g, rest, e, echo, gp99, ep99 float64) round {
		return round{
			GRPC: result{PerSecond: g, P99Ms: gp99, Requests: 4000},
			REST: result{PerSecond: rest},
			Etcd: result{PerSecond: e, P99Ms: ep99},
			Echo: result{PerSecond: echo},
		}
	}
	rounds := []round{
		mk(1000, 400, 2000, 10000, 30, 20),  // 0.50x etcd, p99 1.5x, 10% of echo, REST 40%
		mk(1200, 900, 2000, 10000, 20, 20),  // 0.60x, 1.0x, 12%, 75%
		mk(3000, 2400, 2000, 10000, 40, 20), // 1.50x, 2.0x, 30%, 80%
	}
	for _, tc := range []struct {
		name   string
		rounds []round
		want   []string
	}{
		{"single runs", nil, []string{
			"CreateReferral/etcd put throughput, 64 clients   ", "2.00  (>= 2.00)  met",
			"CreateReferral/etcd put p99, 64 clients   ", "2.00  (<= 1.00)  NOT MET",
			"CreateReferral/gRPC echo throughput, 64 clients   ", "0.50  (>= 0.40)  met",
			"REST/gRPC CreateReferral throughput, 64 clients   ", "0.75  (>= 0.50)  met",
		}},
		{"rounds", rounds, []string{
			"CreateReferral/etcd put throughput, 64 clients, median of 3 rounds", "0.60  (>= 2.00)  NOT MET",
			"CreateReferral/etcd put p99, 64 clients, median of 3 rounds", "1.50  (<= 1.00)  NOT MET",
			"CreateReferral/gRPC echo throughput, 64 clients, median of 3 rounds", "0.12  (>= 0.40)  NOT MET",
			"REST/gRPC CreateReferral throughput, 64 clients, median of 3 rounds", "0.75  (>= 0.50)  met",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			report(&b, results, nil, tc.rounds, 0)
			out := b.String()
			for i := 0; i < len(tc.want); i += 2 {
				line := lineWith(out, tc.want[i])
				if line == "" || !strings.Contains(line, tc.want[i+1]) {
					t.Errorf("no line %q ... %q in:\n%s", tc.want[i], tc.want[i+1], out)
				}
			}
			if tc.rounds != nil && strings.Count(out, "64 clients  ") > 0 {
				t.Errorf("a single-run ratio at 64 clients is judged beside the rounds:\n%s", out)
			}
		})
	}
}

func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
