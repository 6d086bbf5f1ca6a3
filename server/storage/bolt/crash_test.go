package bolt_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// TestKill9KeepsAcknowledged runs a writer in a child process (this test
// binary again), sixteen goroutines each storing organisations with an
// event, and kills it with SIGKILL after a few hundred acknowledgements,
// three times over the same file, with checkpoints every few milliseconds
// so that kills land in every phase. After each kill the store must open,
// hold every organisation the child reported as acknowledged, hold gap-free
// events, and pass bbolt's consistency check.
func TestKill9KeepsAcknowledged(t *testing.T) {
	if path := os.Getenv("EXCHANGE_CRASH_CHILD"); path != "" {
		crashChild(path, os.Getenv("EXCHANGE_CRASH_ROUND"))
		return
	}
	path := filepath.Join(t.TempDir(), "exchange.db")
	var acked []string
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9KeepsAcknowledged$")
		cmd.Env = append(os.Environ(), "EXCHANGE_CRASH_CHILD="+path, fmt.Sprint("EXCHANGE_CRASH_ROUND=", round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		n := 0
		for n < 300+round*200 && lines.Scan() {
			if name, ok := strings.CutPrefix(lines.Text(), "acked "); ok {
				acked = append(acked, name)
				n++
			}
		}
		cmd.Process.Kill()
		for lines.Scan() { // acknowledgements written before the kill still count
			if name, ok := strings.CutPrefix(lines.Text(), "acked "); ok {
				acked = append(acked, name)
			}
		}
		cmd.Wait()
		if n == 0 {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}

		s, err := exchangetest.OpenBolt(path, bolt.Options{})
		if err != nil {
			t.Fatalf("round %d: opening after kill -9: %v", round, err)
		}
		err = s.View(context.Background(), func(tx storage.ReadTx) error {
			for _, name := range acked {
				if _, err := tx.GetOrganization(name); err != nil {
					return fmt.Errorf("acknowledged %s: %w", name, err)
				}
			}
			last, _ := tx.LastSequence()
			events, _, err := tx.ListEvents("", 0, int(last)+1)
			if err != nil {
				return err
			}
			for i, e := range events {
				if e.Sequence != int64(i+1) {
					return fmt.Errorf("event %d has sequence %d", i+1, e.Sequence)
				}
			}
			if int64(len(events)) != last || last < int64(len(acked)) {
				return fmt.Errorf("%d events, last sequence %d, %d acknowledged", len(events), last, len(acked))
			}
			return nil
		})
		s.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := bolt.Check(path); err != nil {
			t.Fatalf("round %d: bbolt check: %v", round, err)
		}
		t.Logf("round %d: %d acknowledged so far, all kept", round, len(acked))
	}
}

func crashChild(path, round string) {
	s, err := exchangetest.OpenBolt(path, bolt.Options{CheckpointInterval: 3 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("organizations/r%s-g%d-%d", round, g, i)
				err := s.Update(context.Background(), func(tx storage.WriteTx) error {
					if err := tx.CreateOrganization(&pb.Organization{Name: name, DisplayName: strings.Repeat("x", 200)}); err != nil {
						return err
					}
					err := tx.AppendEvent(&storage.Event{Event: &pb.Event{Resource: name}, Public: true})
					return err
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(w, "acked", name)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
