package registry

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"golang.org/x/sys/unix"
)

// The App's storage when it is the file system: distribution's filesystem
// driver, same layout on disk, except that an upload in progress is not
// synced. distribution syncs every file it writes: the startedat and
// hashstate files of an upload (a file and its directory each) and, when
// a PATCH ends, the whole data file so far, before it answers 202. None of
// that is needed: a crash mid-upload (of the machine; a killed process
// loses nothing the kernel has) only means the upload starts again, since
// distribution resumes an upload from what its files hold and checks the
// digest of every committed blob. What is acknowledged as stored still is
// synced before the answer: the upload's data at its commit (the PUT that
// answers 201), then the blob's link and every manifest, revision link and
// blob put as distribution writes them.
//
// Three more costs of every small push are cut:
// a small upload's hash states stay in memory (hashStates), a link that
// already holds the same digest is not written again (sameLink: a push by
// digest then by tag wrote the revision link twice), and a committed
// upload's directory is removed file by file (removeUpload). File system
// calls per small push: 243 before, 159 after (distribution: 307).
//
// One thing distribution leaves out is added: the directories it creates
// for a blob, link or manifest, and a blob's directory after its data is
// moved in, are synced (mkdirAllSynced, Move), so that an acknowledged
// push survives a crash of the machine on a file system without a journal
// too. That costs about 10 more directory syncs per small push to a new
// repository (187 calls, 28 of them syncs; distribution 307 and 40).

const fastFSDriverName = "slipway-filesystem"

var registerFastFS sync.Once

func registerFastFSDriver() {
	registerFastFS.Do(func() {
		factory.Register(fastFSDriverName, fastFSFactory{})
	})
}

type fastFSFactory struct{}

func (fastFSFactory) Create(ctx context.Context, params map[string]any) (storagedriver.StorageDriver, error) {
	d, err := filesystem.FromParameters(params)
	if err != nil {
		return nil, err
	}
	root, _ := params["rootdirectory"].(string)
	if root == "" {
		return nil, errors.New("registry: the filesystem storage needs a rootdirectory")
	}
	// What a delete that was cut off left behind.
	_ = os.RemoveAll(filepath.Join(root, filepath.FromSlash(trashDir)))
	return &fastFSDriver{StorageDriver: d, root: root}, nil
}

// trashDir is where a blob's directory goes, in one rename, before it is
// removed: outside the blobs, so a walk of them never sees it half gone.
const trashDir = "/docker/registry/v2/_slipway_trash"

// Delete of a blob's directory (only the collector deletes blobs) moves it
// away in one rename and removes it there: an upload that finds the
// blob's bytes missing knows that no delete of them is still running,
// and that what it writes in their place stays (gcWriter.Commit).
func (d *fastFSDriver) Delete(ctx context.Context, path string) error {
	if !strings.HasPrefix(path, blobsRoot) {
		d.hashes.drop(path)
		if removed, err := d.removeUpload(path); removed || err != nil {
			return err
		}
		return d.StorageDriver.Delete(ctx, path)
	}
	full, err := d.full(path)
	if err != nil {
		return err
	}
	trash := filepath.Join(d.root, filepath.FromSlash(trashDir))
	if err := os.MkdirAll(trash, 0o777); err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	gone := filepath.Join(trash, hex.EncodeToString(rnd[:]))
	if err := os.Rename(full, gone); err != nil {
		if os.IsNotExist(err) {
			return storagedriver.PathNotFoundError{Path: path, DriverName: fastFSDriverName}
		}
		return err
	}
	return os.RemoveAll(gone)
}

// removeUpload removes an upload's directory, when path is one and it
// holds what an upload usually does (its startedat and a data file not
// yet moved away), with one call per file: what a committed upload leaves
// behind, without the stat, open and listing of os.RemoveAll. Anything
// else there (hash states written past memHashStateMax) is left to the
// driver's Delete.
func (d *fastFSDriver) removeUpload(path string) (bool, error) {
	if !isUploadDir(path) {
		return false, nil
	}
	full, err := d.full(path)
	if err != nil {
		return false, err
	}
	gone := 0
	for _, f := range []string{"startedat", "data"} {
		if err := os.Remove(filepath.Join(full, f)); err != nil && !os.IsNotExist(err) {
			return false, nil
		} else if err != nil {
			gone++
		}
	}
	switch err := os.Remove(full); {
	case err == nil:
		return true, nil
	case os.IsNotExist(err) && gone == 2:
		return true, storagedriver.PathNotFoundError{Path: path, DriverName: fastFSDriverName}
	default:
		return false, nil
	}
}

// fastFSDriver is distribution's filesystem driver with upload state
// written unsynced.
type fastFSDriver struct {
	storagedriver.StorageDriver
	root   string
	hashes hashStates
}

// isUploadDir says whether path is an upload's own directory,
// REPO/_uploads/ID.
func isUploadDir(path string) bool {
	_, id, ok := strings.Cut(path, "/_uploads/")
	return ok && id != "" && !strings.Contains(id, "/")
}

// isUploadState says whether path is part of an upload in progress:
// REPO/_uploads/ID/{data,startedat,hashstates/...}.
func isUploadState(path string) bool {
	return strings.Contains(path, "/_uploads/")
}

func (d *fastFSDriver) full(path string) (string, error) {
	if !storagedriver.PathRegexp.MatchString(path) {
		return "", storagedriver.InvalidPathError{Path: path, DriverName: fastFSDriverName}
	}
	return filepath.Join(d.root, filepath.FromSlash(path)), nil
}

// PutContent of upload state writes a file of its own and renames it into
// place, as distribution does, without syncing either; a small upload's
// hash state stays in memory (hashStates). A link that already holds
// content is left as it is (sameLink).
func (d *fastFSDriver) PutContent(ctx context.Context, path string, content []byte) error {
	full, err := d.full(path)
	if err != nil {
		return err
	}
	if !isUploadState(path) {
		if strings.HasSuffix(path, "/link") {
			if same, err := sameLink(full, content); same || err != nil {
				return err
			}
		}
		if err := mkdirAllSynced(filepath.Dir(full)); err != nil {
			return err
		}
		return d.StorageDriver.PutContent(ctx, path, content)
	}
	kept, spilled := d.hashes.put(path, content)
	if spilled != nil {
		d.spill(*spilled)
	}
	if kept {
		return nil
	}
	return writeUnsynced(full, content)
}

// spill writes to the storage a hash state that memory made room for, so
// that its upload still resumes without hashing its data again: uploads
// that are opened and left (by anyone) cost nobody else's commit a
// re-read. An upload already gone is left gone.
func (d *fastFSDriver) spill(hs hashState) {
	full, err := d.full(hs.path)
	if err != nil {
		return
	}
	upload, _, _ := hashStatePath(full)
	if _, err := os.Stat(upload); err != nil {
		return
	}
	_ = writeUnsynced(full, hs.state) // if it fails, the commit hashes again
}

// sameLink reports whether the link at full already holds content, after
// syncing its directory: distribution writes a manifest's revision link on
// every put of it (a push by digest, then by tag, writes it twice), each
// time to a new file synced and renamed over the old one. A link that
// holds content was synced before its rename; the sync of its directory
// makes the rename durable too, in case the put that made it is still
// before its own.
func sameLink(full string, content []byte) (bool, error) {
	old, err := os.ReadFile(full)
	if err != nil || !bytes.Equal(old, content) {
		return false, nil
	}
	if err := syncDir(filepath.Dir(full)); err != nil {
		return false, err
	}
	return true, nil
}

// Move of an upload's data to its blob (the only move into the blobs)
// makes the blob's directory entries durable before the commit goes on to
// write its link: distribution renames the data into place and syncs
// nothing, so after a crash of the machine the link could be there and
// the blob not.
func (d *fastFSDriver) Move(ctx context.Context, src, dst string) error {
	if !strings.HasPrefix(dst, blobsRoot) {
		return d.StorageDriver.Move(ctx, src, dst)
	}
	full, err := d.full(dst)
	if err != nil {
		return err
	}
	if err := mkdirAllSynced(filepath.Dir(full)); err != nil {
		return err
	}
	if err := d.StorageDriver.Move(ctx, src, dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(full))
}

// mkdirAllSynced is os.MkdirAll that also syncs the parent of every
// directory it creates, so that their entries survive a crash of the
// machine. distribution syncs a file it writes and the directory that
// holds it, not the directories above that it had to create (a new blob's
// sha256/xx/HASH, a new manifest's revisions/sha256/HASH); on a file system
// without a journal those can be lost with the machine. The deepest
// directory is synced by whoever puts the file in it.
func mkdirAllSynced(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !os.IsNotExist(err) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o777); err != nil && !os.IsExist(err) {
			return err
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// syncDir makes the entries of the directory dir durable.
var syncDir = func(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// GetContent reads a hash state kept in memory from there.
func (d *fastFSDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	if isUploadState(path) {
		if b, ok := d.hashes.get(path); ok {
			return b, nil
		}
	}
	return d.StorageDriver.GetContent(ctx, path)
}

// List of an upload's hash states adds those kept in memory.
func (d *fastFSDriver) List(ctx context.Context, path string) ([]string, error) {
	list, err := d.StorageDriver.List(ctx, path)
	if !isUploadState(path) {
		return list, err
	}
	mem := d.hashes.list(path)
	if len(mem) == 0 {
		return list, err
	}
	var missing storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &missing) {
		return nil, err
	}
	for _, p := range mem {
		if !slices.Contains(list, p) {
			list = append(list, p)
		}
	}
	return list, nil
}

// Writer of an upload's data does not sync when it is closed (the end of
// a PATCH), only when it is committed (the upload's PUT).
func (d *fastFSDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	if !isUploadState(path) {
		return d.StorageDriver.Writer(ctx, path, append)
	}
	full, err := d.full(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	var off int64
	if append {
		if off, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, err
		}
	} else if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	return &uploadWriter{f: f, bw: bufio.NewWriterSize(f, 64<<10), size: off, started: off}, nil
}

// uploadWriter is the filesystem driver's file writer with Close unsynced.
type uploadWriter struct {
	f                            *os.File
	bw                           *bufio.Writer
	size                         int64
	started                      int64 // writeback is started up to here
	closed, committed, cancelled bool
}

func (w *uploadWriter) Write(p []byte) (int, error) {
	switch {
	case w.closed:
		return 0, errors.New("already closed")
	case w.committed:
		return 0, errors.New("already committed")
	case w.cancelled:
		return 0, errors.New("already cancelled")
	}
	n, err := w.bw.Write(p)
	w.size += int64(n)
	if w.size-w.started >= writebackChunk {
		// Start writing back what is written so far, without waiting
		// for it: the disk works while the rest arrives, and the sync
		// at the commit finds little left to write.
		if w.bw.Flush() == nil {
			_ = unix.SyncFileRange(int(w.f.Fd()), w.started, w.size-w.started, unix.SYNC_FILE_RANGE_WRITE)
			w.started = w.size
		}
	}
	return n, err
}

// writebackChunk is how much an upload writes before its writeback starts.
const writebackChunk = 8 << 20

func (w *uploadWriter) Size() int64 { return w.size }

// Close flushes to the kernel: what a PATCH acknowledged survives the
// process, and the next request (in any registry process on this
// storage) reads it.
func (w *uploadWriter) Close() error {
	if w.closed {
		return errors.New("already closed")
	}
	w.closed = true
	var err error
	if !w.committed {
		err = w.bw.Flush()
	}
	return errors.Join(err, w.f.Close())
}

func (w *uploadWriter) Cancel(ctx context.Context) error {
	if w.closed {
		return errors.New("already closed")
	}
	w.cancelled, w.closed = true, true
	_ = w.f.Close()
	return os.Remove(w.f.Name())
}

// Commit makes the upload's data durable: the blob is acknowledged next.
func (w *uploadWriter) Commit(ctx context.Context) error {
	switch {
	case w.closed:
		return errors.New("already closed")
	case w.committed:
		return errors.New("already committed")
	case w.cancelled:
		return errors.New("already cancelled")
	}
	if err := w.bw.Flush(); err != nil {
		return err
	}
	// Stamped with the time of the commit: a collection spares a blob
	// written within its grace period, and an upload that needs no
	// garbage-collection hold relies on that (gchold.go).
	now := time.Now()
	if err := os.Chtimes(w.f.Name(), now, now); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(w.f.Fd())); err != nil {
		return fmt.Errorf("syncing the upload: %w", err)
	}
	w.committed = true
	return nil
}

// writeUnsynced writes content to full through a temporary file renamed
// into place, as distribution's filesystem driver does, without syncing
// either: the file has all of content or is as it was. Its mode is 0666
// less the umask, as the driver's files are.
func writeUnsynced(full string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return err
	}
	return writeRenamed(full, content)
}

// writeRenamed is writeUnsynced in a directory that exists.
func writeRenamed(full string, content []byte) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	f, err := os.OpenFile(full+"."+hex.EncodeToString(rnd[:])+".tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), full); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// hashStates keeps in memory the hash state distribution stores for an
// upload at the end of each of its requests (…/_uploads/ID/hashstates/
// ALG/OFFSET), up to memHashStateMax bytes into the upload: a small blob's
// POST, PATCH and PUT wrote two files each (every request closes its
// upload twice), none of which it needs. A state at offset 0 is never
// read (distribution resets the hash there) and is not kept at all. Only
// an upload's latest state is kept: the next request resumes from the
// state at the data's size, the one the last request wrote.
//
// A state that is not found costs time, never correctness: distribution
// then reads the upload's data again to hash it when the upload is
// committed. That happens when another registry process serves the
// upload's next request, or after a restart. States past memHashStateMax
// are written as before, so a large upload resumed elsewhere still picks
// up where its last chunk ended; so is the state memory makes room for
// when it holds memHashStates uploads (fastFSDriver.spill).
type hashStates struct {
	mu sync.Mutex
	m  map[string]hashState // upload directory → its latest state
}

type hashState struct {
	path  string
	state []byte
}

const memHashStateMax = 4 << 20

// memHashStates bounds the uploads whose state is kept (a variable for
// tests).
var memHashStates = 16384

// hashStatePath splits …/_uploads/ID/hashstates/ALG/OFFSET into the
// upload's directory and the offset.
func hashStatePath(path string) (upload string, offset int64, ok bool) {
	i := strings.LastIndex(path, "/hashstates/")
	if i < 0 || !strings.Contains(path[:i], "/_uploads/") {
		return "", 0, false
	}
	rest := path[i+len("/hashstates/"):]
	j := strings.IndexByte(rest, '/')
	if j <= 0 {
		return "", 0, false
	}
	offset, err := strconv.ParseInt(rest[j+1:], 10, 64)
	if err != nil || offset < 0 {
		return "", 0, false
	}
	return path[:i], offset, true
}

// put keeps a small state in memory and reports whether it did, and the
// state it let go to make room, which belongs in the storage.
func (h *hashStates) put(path string, state []byte) (kept bool, spilled *hashState) {
	upload, offset, ok := hashStatePath(path)
	if !ok || offset >= memHashStateMax {
		return false, nil
	}
	if offset == 0 {
		return true, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]hashState{}
	}
	if _, ok := h.m[upload]; !ok && len(h.m) >= memHashStates {
		for k, hs := range h.m { // any one
			delete(h.m, k)
			spilled = &hs
			break
		}
	}
	h.m[upload] = hashState{path: path, state: bytes.Clone(state)}
	return true, spilled
}

func (h *hashStates) get(path string) ([]byte, bool) {
	upload, _, ok := hashStatePath(path)
	if !ok {
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if hs, ok := h.m[upload]; ok && hs.path == path {
		return bytes.Clone(hs.state), true
	}
	return nil, false
}

// list is the path of the state kept under dir, an upload's
// …/hashstates/ALG, if there is one.
func (h *hashStates) list(dir string) []string {
	i := strings.LastIndex(dir, "/hashstates/")
	if i < 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if hs, ok := h.m[dir[:i]]; ok && strings.HasPrefix(hs.path, dir+"/") {
		return []string{hs.path}
	}
	return nil
}

// drop forgets the states under path, deleted: an upload's directory
// (its commit or cancel), a repository, or anything above them.
func (h *hashStates) drop(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) == 0 {
		return
	}
	if _, ok := h.m[path]; ok {
		delete(h.m, path)
		return
	}
	if isUploadDir(path) {
		return // an upload that kept no state
	}
	for upload, hs := range h.m {
		if strings.HasPrefix(upload, path+"/") || hs.path == path || strings.HasPrefix(hs.path, path+"/") {
			delete(h.m, upload)
		}
	}
}
