// Package metrics is the exchange's Prometheus metrics, served at /metrics:
// per-RPC counts and latencies (go-grpc-middleware's provider), the store's
// commits, and figures read from the store at each scrape (referrals by
// state, overdue referrals, each service's capacity, open event streams,
// database size). No label holds personal data: labels are methods, codes,
// states and service names, never a person or a free-text field.
package metrics

import (
	"context"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/storage"
)

// Metrics holds the exchange's collectors and their registry.
type Metrics struct {
	reg            *prometheus.Registry
	rpc            *grpcprom.ServerMetrics
	commitSeconds  prometheus.Histogram
	commitWrites   prometheus.Histogram
	commitFailures prometheus.Counter
	checkpoints    *prometheus.HistogramVec
	refused        *prometheus.CounterVec
	reruns         prometheus.Counter
}

// New returns the metrics with the Go runtime, process, RPC and store commit
// collectors registered. Add the store's figures with Watch once the store
// is open.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}))),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exchange_store_commit_duration_seconds",
			Help:    "Time to commit one group of store transactions to the store's log, fdatasync included. Each commit carries the writes of every caller queued at the time (group commit).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exchange_store_commit_writes",
			Help:    "Callers' writes carried by one store commit (the group commit batch size).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_store_commit_failures_total",
			Help: "Store commits that failed (disk full, I/O error; after a failed fdatasync the store stops and the exchange exits).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exchange_store_writes_refused_total",
			Help: "Writes the store refused without trying them, by reason: backlog (checkpoints failing for a full disk and the log at its bound) or stopped (after a failed fsync).",
		}, []string{"reason"}),
		reruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exchange_store_transaction_reruns_total",
			Help: "Store transactions run again because a concurrent write changed what they read (etcd: another exchange process, or another call, wrote a key they read first). A steady rise means writers contend for the same keys.",
		}),
		checkpoints: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exchange_store_checkpoint_duration_seconds",
			Help:    "Time to bring the store file up to date with its log (a bbolt commit, fsync included), by result (ok or failed). A failed checkpoint loses nothing; the next one tries again.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpc, m.commitSeconds, m.commitWrites, m.commitFailures, m.checkpoints, m.refused, m.reruns,
	)
	m.refused.WithLabelValues("backlog")
	m.refused.WithLabelValues("stopped")
	m.checkpoints.WithLabelValues("ok")
	m.checkpoints.WithLabelValues("failed")
	return m
}

// ObserveCommit records one store commit; it is bolt.Options.OnCommit.
func (m *Metrics) ObserveCommit(writes int, took time.Duration, err error) {
	if err != nil {
		m.commitFailures.Inc()
		return
	}
	m.commitSeconds.Observe(took.Seconds())
	m.commitWrites.Observe(float64(writes))
}

// ObserveTransaction records one etcd transaction that wrote: its commit
// and how many times it ran before it committed; it is
// etcd.Options.OnCommit.
func (m *Metrics) ObserveTransaction(_, _ int, took time.Duration, runs int, err error) {
	m.ObserveCommit(1, took, err)
	if runs > 1 {
		m.reruns.Add(float64(runs - 1))
	}
}

// ObserveRefused records a write the store refused without trying it; it
// is bolt.Options.OnRefused.
func (m *Metrics) ObserveRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ObserveCheckpoint records one checkpoint; it is bolt.Options.OnCheckpoint.
func (m *Metrics) ObserveCheckpoint(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.checkpoints.WithLabelValues(result).Observe(took.Seconds())
}

// UnaryInterceptor counts and times unary calls. Give it (and
// StreamInterceptor) before the exchange's own interceptors, so that it
// counts every call, refusals included.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return m.rpc.UnaryServerInterceptor()
}

// StreamInterceptor counts and times streams; see UnaryInterceptor.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return m.rpc.StreamServerInterceptor()
}

// InitializeMetrics creates every method's RPC series at zero, so a rate
// of a call not yet made is 0 rather than missing.
func (m *Metrics) InitializeMetrics(g *grpc.Server) { m.rpc.InitializeMetrics(g) }

// Handler serves the metrics in the Prometheus text format. If the store
// cannot be read, the scrape still returns every other metric.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the metrics are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Sources are what the store figures are read from.
type Sources struct {
	Store storage.Store
	// Size is the database file's size in bytes.
	Size func() int64
	// Watchers is how many event streams are open.
	Watchers func() int64
	// Now is the clock overdue is judged by; time.Now when nil.
	Now func() time.Time
}

// Watch registers the figures read from the store at each scrape.
func (m *Metrics) Watch(src Sources) {
	if src.Now == nil {
		src.Now = time.Now
	}
	m.reg.MustRegister(&storeCollector{src: src})
}

var (
	referralsDesc = prometheus.NewDesc("exchange_referrals",
		"Referrals stored, by state.", []string{"state"}, nil)
	overdueDesc = prometheus.NewDesc("exchange_referrals_overdue",
		"Referrals still REQUESTED after their reply-by deadline.", nil, nil)
	capacityStatusDesc = prometheus.NewDesc("exchange_service_capacity_status",
		"Each service's capacity status: 1 for the status it has now, 0 for the others.", []string{"service", "status"}, nil)
	activeDesc = prometheus.NewDesc("exchange_service_active_referrals",
		"Each service's referrals that are REQUESTED, ACCEPTED or IN_PROGRESS.", []string{"service"}, nil)
	waitlistedDesc = prometheus.NewDesc("exchange_service_waitlisted_referrals",
		"Each service's referrals that are ON_HOLD.", []string{"service"}, nil)
	maxActiveDesc = prometheus.NewDesc("exchange_service_max_active_referrals",
		"Each service's maximum of active referrals; 0 means no maximum.", []string{"service"}, nil)
	watchersDesc = prometheus.NewDesc("exchange_event_watchers",
		"Event streams (WatchEvents) open now.", nil, nil)
	sizeDesc = prometheus.NewDesc("exchange_store_size_bytes",
		"Size of the database file and its log (the log stays below the checkpoint limit, 16 MiB, plus 1 MiB).", nil, nil)
)

// storeCollector reads the store figures in one read transaction per
// scrape. Referral counts are kept by the store as referrals change; the
// other reads are bounded by the number of services and overdue referrals.
type storeCollector struct{ src Sources }

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{referralsDesc, overdueDesc, capacityStatusDesc, activeDesc, waitlistedDesc, maxActiveDesc, watchersDesc, sizeDesc} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.Watchers != nil {
		gauge(watchersDesc, float64(c.src.Watchers()))
	}
	if c.src.Size != nil {
		gauge(sizeDesc, float64(c.src.Size()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.src.Store.View(ctx, func(tx storage.ReadTx) error {
		states, err := tx.ReferralStates()
		if err != nil {
			return err
		}
		for _, s := range codes(pb.ReferralState(0).Descriptor()) {
			gauge(referralsDesc, float64(states[pb.ReferralState(s)]), pb.Code(pb.ReferralState(s)))
		}
		overdue, err := tx.CountUnanswered(c.src.Now())
		if err != nil {
			return err
		}
		gauge(overdueDesc, float64(overdue))
		statuses := codes(pb.CapacityStatus(0).Descriptor())
		for after := ""; ; {
			p, err := tx.ListCapacity(after, 500)
			if err != nil {
				return err
			}
			for _, cp := range p.Items {
				svc, ok := names.ServiceOfCapacity(cp.Name)
				if !ok {
					continue
				}
				for _, s := range statuses {
					gauge(capacityStatusDesc, b2f(cp.Status == pb.CapacityStatus(s)), svc, pb.Code(pb.CapacityStatus(s)))
				}
				gauge(activeDesc, float64(cp.ActiveReferrals), svc)
				gauge(waitlistedDesc, float64(cp.WaitlistedReferrals), svc)
				gauge(maxActiveDesc, float64(cp.MaxActiveReferrals), svc)
			}
			if after = p.Next; after == "" {
				return nil
			}
		}
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(referralsDesc, err)
	}
}

// codes are the numbers of an enum's values other than UNSPECIFIED.
func codes(d protoreflect.EnumDescriptor) []protoreflect.EnumNumber {
	var out []protoreflect.EnumNumber
	for i := range d.Values().Len() {
		if n := d.Values().Get(i).Number(); n != 0 {
			out = append(out, n)
		}
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
