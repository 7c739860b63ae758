package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// A push floor: what the same client's pushes cost against a registry that
// does only what no registry can skip if it keeps what it acknowledges.
// It verifies each blob's digest as the bytes arrive, and before each 201
// makes the blob or manifest durable: fdatasync of the file, rename into
// place, fsync of the directory. It records nothing else (no repository
// links, no metadata store, no authorization), and with token set it
// answers the client's bearer challenge with a fixed token at once, so the
// client makes the requests it makes to Slipway (ping, 401, token) at the
// least cost they can have.
//
// Its rows bound what the push goals can reach on this machine with this
// client: a registry that authenticates and records pushes does at least
// this work.
type floorRegistry struct {
	dir   string
	token bool
	host  string
	next  atomic.Int64
	// etcd, when set, records each manifest put with one Put (a raft
	// write, synced to etcd's log) before the 201: the least a registry
	// that keeps its tags in etcd, as Slipway does, must add.
	etcd *clientv3.Client

	mu      sync.Mutex
	uploads map[string]*floorUpload
}

type floorUpload struct {
	f    *os.File
	h    hash.Hash
	size int64
}

// startFloor serves a floor registry on loopback and returns it as a
// target (basic credentials when it challenges for a token, as Slipway's
// target has).
func startFloor(dir, name string, token bool, etcd *clientv3.Client) *target {
	for _, d := range []string{"uploads", "blobs", "manifests"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fr := &floorRegistry{dir: dir, token: token, host: ln.Addr().String(), uploads: map[string]*floorUpload{}, etcd: etcd}
	go http.Serve(ln, fr)
	t := &target{name: name, host: fr.host, repo: "bench/app", auth: authn.Anonymous}
	if token {
		t.auth = &authn.Basic{Username: "bench", Password: "bench"}
	}
	return t
}

func (fr *floorRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/token" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"token":"floor","access_token":"floor","expires_in":300}`)
		return
	}
	if fr.token && r.Header.Get("Authorization") != "Bearer floor" {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="floor"`, fr.host))
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if p == "/v2/" || p == "/v2" {
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok || strings.Contains(rest, "..") {
		http.NotFound(w, r)
		return
	}
	switch {
	case strings.Contains(rest, "/blobs/uploads/"):
		repo, id, _ := strings.Cut(rest, "/blobs/uploads/")
		fr.upload(w, r, repo, id)
	case strings.Contains(rest, "/blobs/"):
		_, dgst, _ := strings.Cut(rest, "/blobs/")
		fi, err := os.Stat(filepath.Join(fr.dir, "blobs", hexOf(dgst)))
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
		w.Header().Set("Docker-Content-Digest", dgst)
	case strings.Contains(rest, "/manifests/"):
		repo, ref, _ := strings.Cut(rest, "/manifests/")
		fr.manifest(w, r, repo, ref)
	default:
		http.NotFound(w, r)
	}
}

func (fr *floorRegistry) upload(w http.ResponseWriter, r *http.Request, repo, id string) {
	loc := func(id string) string { return "/v2/" + repo + "/blobs/uploads/" + id }
	if r.Method == http.MethodPost {
		id := fmt.Sprint(fr.next.Add(1))
		f, err := os.Create(filepath.Join(fr.dir, "uploads", id))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fr.mu.Lock()
		fr.uploads[id] = &floorUpload{f: f, h: sha256.New()}
		fr.mu.Unlock()
		w.Header().Set("Location", loc(id))
		w.Header().Set("Range", "0-0")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	fr.mu.Lock()
	u := fr.uploads[id]
	fr.mu.Unlock()
	if u == nil {
		http.Error(w, "unknown upload", http.StatusNotFound)
		return
	}
	n, err := io.Copy(io.MultiWriter(u.f, u.h), r.Body)
	u.size += n
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodPatch {
		w.Header().Set("Location", loc(id))
		w.Header().Set("Range", fmt.Sprintf("0-%d", u.size-1))
		w.WriteHeader(http.StatusAccepted)
		return
	}
	dgst := r.URL.Query().Get("digest")
	fr.mu.Lock()
	delete(fr.uploads, id)
	fr.mu.Unlock()
	if "sha256:"+hex.EncodeToString(u.h.Sum(nil)) != dgst {
		u.f.Close()
		os.Remove(u.f.Name())
		http.Error(w, "digest mismatch", http.StatusBadRequest)
		return
	}
	if err := durable(u.f, filepath.Join(fr.dir, "blobs", hexOf(dgst))); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+dgst)
	w.Header().Set("Docker-Content-Digest", dgst)
	w.WriteHeader(http.StatusCreated)
}

func (fr *floorRegistry) manifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	file := filepath.Join(fr.dir, "manifests", url.PathEscape(repo+":"+ref))
	switch r.Method {
	case http.MethodHead, http.MethodGet:
		b, err := os.ReadFile(file)
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case http.MethodPut:
		b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(b)
		dgst := "sha256:" + hex.EncodeToString(sum[:])
		if strings.HasPrefix(ref, "sha256:") && ref != dgst {
			http.Error(w, "digest mismatch", http.StatusBadRequest)
			return
		}
		f, err := os.CreateTemp(filepath.Join(fr.dir, "uploads"), "m")
		if err == nil {
			_, err = f.Write(b)
		}
		if err == nil {
			err = durable(f, file)
		}
		if err == nil && fr.etcd != nil {
			_, err = fr.etcd.Put(r.Context(), "/registrybench-floor/"+repo+"/"+ref, dgst)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Location", "/v2/"+repo+"/manifests/"+dgst)
		w.Header().Set("Docker-Content-Digest", dgst)
		w.WriteHeader(http.StatusCreated)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// durable syncs f's data, closes it, renames it to dst and syncs dst's
// directory, so that dst survives a crash once this returns.
func durable(f *os.File, dst string) error {
	err := unix.Fdatasync(int(f.Fd()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func hexOf(dgst string) string {
	_, hx, _ := strings.Cut(dgst, ":")
	return filepath.Base(hx)
}

// ababFloors is abab with floor targets taking their turn after the peer
// in each round; it returns the floors' medians too.
func ababFloors(rounds int, f func(t *target, round int) float64, slip, peer *target, floors []*target) (medians, []float64) {
	var as, bs []float64
	fs := make([][]float64, len(floors))
	for r := range rounds {
		as = append(as, f(slip, r))
		slip.drainScans()
		bs = append(bs, f(peer, r))
		for i, fl := range floors {
			fs[i] = append(fs[i], f(fl, r))
		}
	}
	out := make([]float64, len(floors))
	for i := range fs {
		out[i] = median(fs[i])
	}
	return medians{median(as), median(bs)}, out
}
