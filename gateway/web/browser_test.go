package web_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestBrowserInbox signs in as a community group in headless Chromium,
// accepts a referral, records the first session and a WEMWBS score, and
// checks over gRPC that the link workers see the feedback. It saves a
// screenshot of the inbox in .artifacts/inbox.png at the repository root.
func TestBrowserInbox(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	ctx := headless(t)
	x := startInbox(t)

	var shot []byte
	var flash1, flash2, flash3, heading string
	err := chromedp.Run(ctx,
		chromedp.Navigate(x.url+"/"),
		chromedp.WaitVisible("#api_key", chromedp.ByQuery),
		chromedp.SendKeys("#api_key", x.Keys["walkers"], chromedp.ByQuery),
		chromedp.Click(`form[action="/signin"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#h-new", chromedp.ByQuery),
		chromedp.FullScreenshot(&shot, 100),
		chromedp.Click(`#h-new ~ table a`, chromedp.ByQuery),
		chromedp.WaitVisible(`h1`, chromedp.ByQuery),
		chromedp.Text("h1", &heading, chromedp.ByQuery),
		chromedp.Click(`form[action$="/accept"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#done-accept", chromedp.ByQuery),
		chromedp.Text("#done-accept", &flash1, chromedp.ByQuery),
		chromedp.SetValue("#status", "FIRST_SESSION_ATTENDED", chromedp.ByQuery),
		chromedp.Click(`form[action$="/uptake"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#done-uptake", chromedp.ByQuery),
		chromedp.Text("#done-uptake", &flash2, chromedp.ByQuery),
		chromedp.SetValue("#instrument", "WEMWBS", chromedp.ByQuery),
		chromedp.SetValue("#timepoint", "BASELINE", chromedp.ByQuery),
		chromedp.SendKeys("#total", "52", chromedp.ByQuery),
		chromedp.Click(`form[action$="/outcome"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#done-outcome", chromedp.ByQuery),
		chromedp.Text("#done-outcome", &flash3, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatal(err)
	}
	if heading != "Ada Jones" || flash1 != "Accepted. The referrer has been told." || flash2 != "Attendance recorded." || flash3 != "Outcome recorded." {
		t.Errorf("pages said %q, %q, %q, %q", heading, flash1, flash2, flash3)
	}
	saveShot(t, "inbox.png", shot)

	// The link workers hear back over gRPC.
	l, err := pb.NewFeedbackServiceClient(x.Conn).ListFeedback(x.As("pcn"), &pb.ListFeedbackRequest{Parent: x.referral})
	if err != nil || len(l.Feedback) != 2 {
		t.Fatalf("the link workers see %v, %v", l, err)
	}
	up, out := l.Feedback[0].GetUptake(), l.Feedback[1].GetOutcome()
	if up.GetStatus() != pb.UptakeStatus_UPTAKE_STATUS_FIRST_SESSION_ATTENDED || out.GetInstrument() != pb.Instrument_INSTRUMENT_WEMWBS || out.GetTotal() != 52 {
		t.Errorf("feedback = %v", l.Feedback)
	}
	r, _ := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: x.referral})
	if r.GetState() != pb.ReferralState_REFERRAL_STATE_ACCEPTED {
		t.Errorf("referral state = %v", r.GetState())
	}
}

// headless is a context driving a headless Chromium at 1200 x 900, for at
// most 90 seconds; the browser stops with the test.
func headless(t *testing.T) context.Context {
	t.Helper()
	exe := exchangetest.Need(t, "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelCtx(); cancelAlloc() })
	return ctx
}

// saveShot writes a screenshot to .artifacts/name at the repository root.
func saveShot(t *testing.T, name string, shot []byte) {
	t.Helper()
	if dir, err := filepath.Abs("../../.artifacts"); err == nil && os.MkdirAll(dir, 0o755) == nil {
		if os.WriteFile(filepath.Join(dir, name), shot, 0o644) == nil {
			t.Logf("screenshot: %s", filepath.Join(dir, name))
		}
	}
}
