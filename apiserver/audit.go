package apiserver

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// auditFlushInterval bounds how long an audit line waits in memory before
// it is written to the audit log.
const auditFlushInterval = 100 * time.Millisecond

// auditBuffer batches audit lines into few writes: a write system call per
// mutating request cost the create path a syscall each. Lines are written
// when the buffer fills, every auditFlushInterval, and by Flush, which the
// server calls at graceful shutdown after the last request has ended, so a
// graceful stop loses no line.
//
// What kill -9 can lose: the lines of the last auditFlushInterval (at most
// the buffer's size), for requests that were already answered. The audit
// log was never synced to disk per line, so a machine crash could already
// lose lines the kernel had not written back; a process kill could not,
// and now can, for that short window.
type auditBuffer struct {
	mu    sync.Mutex
	w     *bufio.Writer
	dirty bool
	// closed: Close has run; later lines (a request that outlived the
	// HTTP server's shutdown deadline) are written through.
	closed bool
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newAuditBuffer(dst io.Writer, every time.Duration) *auditBuffer {
	a := &auditBuffer{w: bufio.NewWriterSize(dst, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go a.flushEvery(every)
	return a
}

// Write takes one audit line (slog writes each record in one call).
func (a *auditBuffer) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, err := a.w.Write(p)
	if a.closed && err == nil {
		return n, a.w.Flush()
	}
	a.dirty = true
	return n, err
}

// Flush writes every buffered line.
func (a *auditBuffer) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dirty = false
	return a.w.Flush()
}

func (a *auditBuffer) flushEvery(d time.Duration) {
	defer close(a.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			if a.dirty {
				a.dirty = false
				_ = a.w.Flush()
			}
			a.mu.Unlock()
		}
	}
}

// Close flushes and stops the periodic flush. Lines written later still
// reach the buffer and are written by the next Flush or when it fills.
func (a *auditBuffer) Close() error {
	a.once.Do(func() { close(a.stop); <-a.done })
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	return a.Flush()
}
