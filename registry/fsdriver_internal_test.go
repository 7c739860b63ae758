package registry

import (
	"fmt"
	"testing"
)

func TestHashStatesKeepSmallLatestAndBounded(t *testing.T) {
	var h hashStates
	const up = "/docker/registry/v2/repositories/p/app/_uploads/u1"
	if !h.put(up+"/hashstates/sha256/0", []byte("zero")) {
		t.Error("a state at offset 0 was not taken")
	}
	if got := h.list(up + "/hashstates/sha256"); len(got) != 0 {
		t.Errorf("a state at offset 0 is listed: %v, want it dropped (never read)", got)
	}
	if h.put(up+"/hashstates/sha256/4194304", []byte("big")) {
		t.Error("a state at 4 MiB was kept in memory, want it written to the storage")
	}
	if h.put("/docker/registry/v2/repositories/p/app/_layers/sha256/x/link", []byte("l")) {
		t.Error("a link was taken as a hash state")
	}
	h.put(up+"/hashstates/sha256/100", []byte("a"))
	h.put(up+"/hashstates/sha256/200", []byte("b"))
	if got := h.list(up + "/hashstates/sha256"); len(got) != 1 || got[0] != up+"/hashstates/sha256/200" {
		t.Errorf("list: %v, want the latest state only", got)
	}
	if _, ok := h.get(up + "/hashstates/sha256/100"); ok {
		t.Error("an earlier state is still read")
	}
	if b, ok := h.get(up + "/hashstates/sha256/200"); !ok || string(b) != "b" {
		t.Errorf("get: %q %v", b, ok)
	}
	h.drop("/docker/registry/v2/repositories/p") // a deleted project
	if _, ok := h.get(up + "/hashstates/sha256/200"); ok {
		t.Error("a deleted repository's upload state is still read")
	}
	for i := range memHashStates + 10 {
		h.put(fmt.Sprintf("/docker/registry/v2/repositories/p/app/_uploads/n%d/hashstates/sha256/1", i), []byte("s"))
	}
	if len(h.m) > memHashStates {
		t.Errorf("%d uploads' states kept, want at most %d", len(h.m), memHashStates)
	}
	h.drop("/docker/registry/v2/repositories/p/app/_uploads/n5")
	if _, ok := h.get("/docker/registry/v2/repositories/p/app/_uploads/n5/hashstates/sha256/1"); ok {
		t.Error("a committed upload's state is still read")
	}
}
