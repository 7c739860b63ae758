package scan

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/language/golang/gobinary"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// goBuildInfoMagic starts the build information the Go linker writes into
// every binary (debug/buildinfo looks for the same bytes). An executable
// without it has no module list, so it is not kept.
var goBuildInfoMagic = []byte("\xff Go buildinf:")

// osReleasePaths are always kept: the OS extractors read them to name the
// distribution release, and Debian's /etc/os-release is a link to the
// second one.
var osReleasePaths = map[string]bool{"etc/os-release": true, "usr/lib/os-release": true}

const maxOSReleaseBytes = 64 << 10

// flatten streams the image's flattened filesystem (mutate.Extract applies
// whiteouts and keeps the uppermost version of each path) and keeps in
// memory only the files one of the extractors asks for, plus every link.
// Every layer's entries are checked as they stream in (boundedImage): names
// and link targets of at most PATH_MAX, and a budget for all of them; the
// links and directories kept count against the memory budget.
//
// mutate.Extract refuses entries whose names leave the root ("../x") and
// drops relative links that do; absolute names and absolute link targets
// are kept and mean "inside the image" (see memFS). Nothing is written to
// disk.
func flatten(ctx context.Context, img v1.Image, exts []filesystem.Extractor, o options) (*memFS, error) {
	rc := mutate.Extract(boundedImage{Image: img, b: newMetaBudget(o.maxMetaBytes)})
	defer rc.Close() // stops the extracting goroutine if we return early
	cr := &countingReader{ctx: ctx, r: rc, max: o.maxImageBytes}
	tr := tar.NewReader(cr)
	m := newMemFS()
	var kept int64
	var scratch []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract closes its tar stream (writing the end
			// marker) before it passes its error to the pipe, so an
			// extraction error looks like a clean end of archive: read on
			// to the pipe's own end to see it.
			if _, err := io.Copy(io.Discard, cr); err != nil {
				return nil, cr.wrap(err)
			}
			break
		}
		if err != nil {
			return nil, cr.wrap(err)
		}
		name := cleanName(hdr.Name)
		if name == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			if hdr.Linkname != "" {
				m.addLink(name, hdr.Linkname)
			}
			if kept+m.meta > o.maxKeptBytes {
				return nil, fmt.Errorf("%w: links, package databases and Go binaries exceed %d bytes", ErrTooLarge, o.maxKeptBytes)
			}
			continue
		case tar.TypeLink:
			if target := cleanName(hdr.Linkname); target != "" && target != name {
				m.addLink(name, "/"+target)
			}
			if kept+m.meta > o.maxKeptBytes {
				return nil, fmt.Errorf("%w: links, package databases and Go binaries exceed %d bytes", ErrTooLarge, o.maxKeptBytes)
			}
			continue
		case tar.TypeReg:
		default:
			continue
		}
		info := hdr.FileInfo()
		api := fileAPI{path: name, info: info}
		keep, sniff := osReleasePaths[name] && hdr.Size <= maxOSReleaseBytes, false
		for _, ex := range exts {
			if keep {
				break
			}
			if ex.FileRequired(api) {
				if ex.Name() == gobinary.Name {
					sniff = true
				} else {
					keep = true
				}
			}
		}
		if !keep && !sniff {
			continue
		}
		if hdr.Size > o.maxFileBytes {
			// Too big to hold; scalibr skips such files the same way.
			continue
		}
		if cap(scratch) < int(hdr.Size) {
			scratch = make([]byte, hdr.Size)
		}
		buf := scratch[:hdr.Size]
		if _, err := io.ReadFull(tr, buf); err != nil {
			return nil, cr.wrap(err)
		}
		if !keep && !bytes.Contains(buf, goBuildInfoMagic) {
			continue
		}
		if kept += hdr.Size; kept+m.meta > o.maxKeptBytes {
			return nil, fmt.Errorf("%w: links, package databases and Go binaries exceed %d bytes", ErrTooLarge, o.maxKeptBytes)
		}
		m.addFile(name, bytes.Clone(buf), info.Mode(), hdr.ModTime)
	}
	m.freeze()
	return m, nil
}

// cleanName turns a tar entry name into a path relative to the image root;
// "" means the root itself.
func cleanName(name string) string {
	p := path.Clean("/" + strings.ReplaceAll(name, "\\", "/"))
	return strings.TrimPrefix(p, "/")
}

// fileAPI answers an extractor's FileRequired from the tar header, before
// the file's bytes are read.
type fileAPI struct {
	path string
	info fs.FileInfo
}

func (a fileAPI) Path() string               { return a.path }
func (a fileAPI) Stat() (fs.FileInfo, error) { return a.info, nil }

// countingReader fails once more than max bytes have been read, which
// bounds the work a decompression bomb can cause, or once ctx is done, so
// that a cancel stops a scan inside a large file too.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("scan: %w", err)
	}
	if c.n >= c.max {
		// At the limit: the stream may still end here.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("%w: more than %d uncompressed bytes", ErrTooLarge, c.max)
	}
	if rest := c.max - c.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) wrap(err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("scan: read image filesystem: %w", err)
}
