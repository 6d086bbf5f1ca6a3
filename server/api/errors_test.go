package api

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/social-prescribing/exchange/server/storage"
)

// TestStoreErrors: what a caller is told of each kind of store failure.
// After a failed fsync (ErrStopped) the outcome is unknown, and the
// message says so rather than "nothing was written".
func TestStoreErrors(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   codes.Code
		reason string
		says   string
	}{
		{fmt.Errorf("%w: %w", storage.ErrStopped, syscall.EIO), codes.Unavailable, "STORE_UNAVAILABLE", "not known"},
		{fmt.Errorf("%w: %w", storage.ErrWriteFailed, syscall.ENOSPC), codes.Unavailable, "STORE_UNAVAILABLE", "disk is full"},
		{fmt.Errorf("%w: backlog", storage.ErrWriteFailed), codes.Unavailable, "STORE_UNAVAILABLE", "nothing was written"},
		{storage.ErrClosed, codes.Unavailable, "STORE_UNAVAILABLE", "shutting down"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "DEADLINE_PASSED", "nothing was written"},
	} {
		st := status.Convert(storeError(context.Background(), c.err))
		info := ""
		for _, d := range st.Details() {
			if r, ok := d.(interface{ GetReason() string }); ok {
				info = r.GetReason()
			}
		}
		if st.Code() != c.code || info != c.reason || !strings.Contains(st.Message(), c.says) {
			t.Errorf("%v: %v %s %q; want %v %s, saying %q", c.err, st.Code(), info, st.Message(), c.code, c.reason, c.says)
		}
	}
}
