package apiserver

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is the audit log: the flusher and the test read it from
// different goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAuditBufferClose: with a flush interval that never comes, Close
// alone writes every buffered line, and a line written after Close (a
// request that outlived the shutdown deadline) goes straight through.
func TestAuditBufferClose(t *testing.T) {
	var log lockedBuffer
	a := newAuditBuffer(&log, time.Hour)
	var want strings.Builder
	for i := range 100 {
		line := fmt.Sprintf("{\"n\":%d}\n", i)
		want.WriteString(line)
		if _, err := a.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != want.String() {
		t.Fatalf("after Close the log holds %d bytes, want every line (%d bytes)", len(got), want.Len())
	}
	if _, err := a.Write([]byte("{\"late\":true}\n")); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); !strings.HasSuffix(got, "{\"late\":true}\n") {
		t.Fatalf("a line written after Close is not in the log: %q", got[max(0, len(got)-40):])
	}
}

// TestAuditBufferFlushesOnInterval: a line reaches the log without Close,
// once the interval has passed (waited for, bounded; not timed).
func TestAuditBufferFlushesOnInterval(t *testing.T) {
	var log lockedBuffer
	a := newAuditBuffer(&log, 10*time.Millisecond)
	defer a.Close()
	a.Write([]byte("{\"n\":1}\n"))
	deadline := time.Now().Add(30 * time.Second)
	for log.String() == "" {
		if time.Now().After(deadline) {
			t.Fatal("a buffered audit line was never written by the periodic flush")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
