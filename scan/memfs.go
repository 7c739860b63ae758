package scan

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

// maxLinkHops bounds symlink resolution, like the kernel's MAXSYMLINKS.
const maxLinkHops = 40

// errLinkLoop is returned when a path needs more than maxLinkHops links.
var errLinkLoop = errors.New("too many levels of symbolic links")

// memFS is the part of an image's flattened filesystem the extractors asked
// for, held in memory: nothing from an image is ever written to disk.
//
// Paths are slash-separated and relative to the image root. Links are
// resolved with chroot semantics: an absolute target starts at the image
// root and ".." at the root stays at the root, so no path can name anything
// outside the image, and a hostile link can at most point at another file of
// the same image.
type memFS struct {
	files map[string]*memFile
	links map[string]string   // path -> link target as written in the tar
	dirs  map[string][]string // dir -> names of its children, sorted by freeze
	// meta is what the links, directories and names cost, which
	// flatten counts against the memory budget with the files' bytes.
	meta int64
}

type memFile struct {
	name  string // base name
	data  []byte
	mode  fs.FileMode
	mtime time.Time
}

func newMemFS() *memFS {
	return &memFS{
		files: map[string]*memFile{},
		links: map[string]string{},
		dirs:  map[string][]string{".": nil},
	}
}

// addFile records a regular file and creates its parent directories.
func (m *memFS) addFile(name string, data []byte, mode fs.FileMode, mtime time.Time) {
	if _, ok := m.files[name]; !ok {
		dir := path.Dir(name)
		m.ensureDir(dir)
		m.dirs[dir] = append(m.dirs[dir], path.Base(name))
		m.meta += int64(len(name) + entryOverhead)
	}
	m.files[name] = &memFile{name: path.Base(name), data: data, mode: mode.Perm(), mtime: mtime}
}

// addLink records a symbolic or hard link. Its directory exists (so that
// etc/ of a Debian image, which holds only the os-release link, can be
// opened) but the link itself is not listed.
func (m *memFS) addLink(name, target string) {
	if old, ok := m.links[name]; ok {
		m.meta -= int64(len(name) + len(old) + entryOverhead)
	}
	m.links[name] = target
	m.meta += int64(len(name) + len(target) + entryOverhead)
	m.ensureDir(path.Dir(name))
}

func (m *memFS) ensureDir(d string) {
	if _, ok := m.dirs[d]; ok {
		return
	}
	m.dirs[d] = nil
	m.meta += int64(len(d) + entryOverhead)
	parent := path.Dir(d)
	m.ensureDir(parent)
	m.dirs[parent] = append(m.dirs[parent], path.Base(d))
}

// freeze sorts directory listings; call it once every file is added.
func (m *memFS) freeze() {
	for d, names := range m.dirs {
		slices.Sort(names)
		m.dirs[d] = slices.Compact(names)
	}
}

// resolve follows links in every component of name and returns the path it
// ends at.
func (m *memFS) resolve(name string) (string, error) {
	var cur []string
	pending := strings.Split(name, "/")
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		p := strings.Join(append(cur, c), "/")
		target, ok := m.links[p]
		if !ok {
			cur = append(cur, c)
			continue
		}
		if hops++; hops > maxLinkHops {
			return "", errLinkLoop
		}
		if strings.HasPrefix(target, "/") {
			cur = cur[:0]
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	if len(cur) == 0 {
		return ".", nil
	}
	return strings.Join(cur, "/"), nil
}

func (m *memFS) lookup(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	p, err := m.resolve(name)
	if err != nil {
		return "", &fs.PathError{Op: op, Path: name, Err: err}
	}
	if _, ok := m.files[p]; ok {
		return p, nil
	}
	if _, ok := m.dirs[p]; ok {
		return p, nil
	}
	return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

// Open implements fs.FS. Files implement io.ReaderAt and io.Seeker, which
// the extractors of Go binaries need.
func (m *memFS) Open(name string) (fs.File, error) {
	p, err := m.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if f, ok := m.files[p]; ok {
		return &openFile{memFile: f, Reader: bytes.NewReader(f.data)}, nil
	}
	entries, _ := m.ReadDir(p)
	return &openDir{info: dirInfo(path.Base(p)), entries: entries}, nil
}

// Stat implements fs.StatFS, following links like os.Stat.
func (m *memFS) Stat(name string) (fs.FileInfo, error) {
	p, err := m.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	if f, ok := m.files[p]; ok {
		return fileInfo{f}, nil
	}
	return dirInfo(path.Base(p)), nil
}

// ReadDir implements fs.ReadDirFS. Links are not listed: the walk visits
// each file once, by its real path.
func (m *memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	p, err := m.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	names, ok := m.dirs[p]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	out := make([]fs.DirEntry, 0, len(names))
	for _, n := range names {
		child := n
		if p != "." {
			child = p + "/" + n
		}
		if f, ok := m.files[child]; ok {
			out = append(out, fs.FileInfoToDirEntry(fileInfo{f}))
		} else {
			out = append(out, fs.FileInfoToDirEntry(dirInfo(n)))
		}
	}
	return out, nil
}

type openFile struct {
	*memFile
	*bytes.Reader
}

func (f *openFile) Stat() (fs.FileInfo, error) { return fileInfo{f.memFile}, nil }
func (f *openFile) Close() error               { return nil }

type openDir struct {
	info    fs.FileInfo
	entries []fs.DirEntry
	off     int
}

func (d *openDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *openDir) Close() error               { return nil }
func (d *openDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}

func (d *openDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.off += len(rest)
	return rest, nil
}

type fileInfo struct{ f *memFile }

func (i fileInfo) Name() string       { return i.f.name }
func (i fileInfo) Size() int64        { return int64(len(i.f.data)) }
func (i fileInfo) Mode() fs.FileMode  { return i.f.mode }
func (i fileInfo) ModTime() time.Time { return i.f.mtime }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

type dirInfo string

func (i dirInfo) Name() string       { return string(i) }
func (i dirInfo) Size() int64        { return 0 }
func (i dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (i dirInfo) ModTime() time.Time { return time.Time{} }
func (i dirInfo) IsDir() bool        { return true }
func (i dirInfo) Sys() any           { return nil }
