package builders

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Limits on an uploaded build context.
const (
	MaxContextBytes   = 1 << 30
	MaxContextEntries = 100_000
)

// ErrHostileArchive is returned for an upload that tries to write outside
// its directory, holds devices, or is too large.
var ErrHostileArchive = errors.New("builders: the source archive is not acceptable")

// extractContext unpacks a tar (gzip or not) into dir. Every write goes
// through os.Root, so no entry — nor a symlink an earlier entry made — can
// reach outside dir; names that try are refused with a clear error rather
// than skipped.
func extractContext(r io.Reader, dir string) error {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrHostileArchive, err)
		}
		defer gz.Close()
		r = gz
	} else {
		r = br
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrHostileArchive, err)
		}
		if n >= MaxContextEntries {
			return fmt.Errorf("%w: more than %d entries", ErrHostileArchive, MaxContextEntries)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if path.IsAbs(h.Name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: entry %q points outside the context", ErrHostileArchive, h.Name)
		}
		if name == "." {
			continue
		}
		mode := fs.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, mode|0o700)
		case tar.TypeReg:
			total += h.Size
			if total > MaxContextBytes {
				return fmt.Errorf("%w: larger than %d bytes", ErrHostileArchive, MaxContextBytes)
			}
			if d := path.Dir(name); d != "." {
				if err = root.MkdirAll(d, 0o755); err != nil {
					break
				}
			}
			var f *os.File
			if f, err = root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode|0o600); err != nil {
				break
			}
			_, err = io.Copy(f, io.LimitReader(tr, h.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		case tar.TypeSymlink:
			// Kept as a link: BuildKit sends links as links, and os.Root
			// never follows one out of dir.
			err = root.Symlink(h.Linkname, name)
		case tar.TypeLink:
			err = root.Link(path.Clean(h.Linkname), name)
		default:
			return fmt.Errorf("%w: entry %q is a %c (device, fifo or other special file)", ErrHostileArchive, h.Name, h.Typeflag)
		}
		if err != nil {
			return fmt.Errorf("%w: entry %q: %v", ErrHostileArchive, h.Name, err)
		}
	}
}
