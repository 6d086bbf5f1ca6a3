package api

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
)

// Server holds the exchange's gRPC services.
type Server struct {
	core   *core
	limits *limiter
	log    *slog.Logger
}

// New returns the services on store.
func New(store storage.Store, opt Options) *Server {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	minCount := opt.ReportMinCount
	if minCount <= 0 {
		minCount = DefaultReportMinCount
	}
	return &Server{core: &core{store: store, now: now, autoReject: opt.AutoRejectAfter, reportMinCount: minCount},
		limits: newLimiter(opt.Limits), log: opt.Logger}
}

// Register registers every service on g: a gRPC server, or the in-process
// channel the REST gateway and the web pages call.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	pb.RegisterDirectoryServiceServer(g, &directory{core: s.core})
	pb.RegisterCapacityServiceServer(g, &capacity{core: s.core})
	pb.RegisterConsentServiceServer(g, &consents{core: s.core})
	pb.RegisterReferralServiceServer(g, &referrals{core: s.core})
	pb.RegisterFeedbackServiceServer(g, &feedback{core: s.core})
	pb.RegisterEventServiceServer(g, &events{core: s.core})
	pb.RegisterApiKeyServiceServer(g, &apiKeys{core: s.core})
	pb.RegisterReportServiceServer(g, &reports{core: s.core})
	pb.RegisterAdminServiceServer(g, &admin{core: s.core})
}

// Watchers is how many event streams (WatchEvents) are open now.
func (s *Server) Watchers() int64 { return s.core.watchers.Load() }
