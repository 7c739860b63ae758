package scheduler

import "sync"

// queue holds the pods waiting for a scheduling attempt. Active pods are
// tried in FIFO order; a pod that fits nowhere is parked until the cluster
// changes in a way that could help it (moveAll), or its spec changes.
type queue struct {
	mu       sync.Mutex
	cond     *sync.Cond
	active   []string
	inActive map[string]bool
	// parked maps a pod key to the generation that did not fit.
	parked map[string]int64
	// moves counts moveAll calls, so an attempt that raced with a cluster
	// change is retried instead of parked.
	moves  uint64
	closed bool
}

func newQueue() *queue {
	q := &queue{inActive: map[string]bool{}, parked: map[string]int64{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) addLocked(key string) {
	delete(q.parked, key)
	if q.inActive[key] || q.closed {
		return
	}
	q.inActive[key] = true
	q.active = append(q.active, key)
	q.cond.Signal()
}

// add makes key active.
func (q *queue) add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

// update makes key active unless it is parked at this same generation: a
// status or label change does not make a pod fit anywhere new.
func (q *queue) update(key string, generation int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if g, ok := q.parked[key]; ok && g == generation {
		return
	}
	q.addLocked(key)
}

// remove forgets key (the pod is gone or bound). A copy already in the
// active list is skipped when popped.
func (q *queue) remove(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.parked, key)
}

// moveCount is read at the start of an attempt and handed back to park.
func (q *queue) moveCount() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.moves
}

// park sets key aside after an attempt that began at moveCount moves. If
// the cluster changed since (or the pod changed and is active again), it
// is not parked: the attempt may have missed what would have helped.
func (q *queue) park(key string, generation int64, moves uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.inActive[key]:
	case q.moves != moves:
		q.addLocked(key)
	default:
		q.parked[key] = generation
	}
}

// moveAll makes every parked pod active.
func (q *queue) moveAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.moves++
	for key := range q.parked {
		q.addLocked(key)
	}
}

// pop blocks for the next active key; false once closed.
func (q *queue) pop() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.active) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key := q.active[0]
	q.active[0] = ""
	q.active = q.active[1:]
	delete(q.inActive, key)
	return key, true
}

// len is the number of active and parked keys.
func (q *queue) len() (active, parked int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.active), len(q.parked)
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
