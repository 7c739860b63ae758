package scan

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Limits on the entries of a layer, checked as each layer streams in,
// before the flattening (mutate.Extract) or the scanner keeps anything of
// them. The tar format lets an entry's name and link target be ~1 MiB each
// (PAX records); the flattening keeps every name it sees and the scanner
// every link, so without these a small gzip layer could make the server
// hold gigabytes.
const (
	// maxPathBytes is Linux's PATH_MAX: no real file name or link target
	// is longer.
	maxPathBytes = 4096
	// maxPathDepth bounds the components of a name; the flattening walks
	// every parent of every entry.
	maxPathDepth = 128
	// entryOverhead is what one entry costs besides its name and target
	// (map entries, headers), counted against the metadata budget.
	entryOverhead = 64
)

// WithMaxMetadataBytes bounds the names and link targets of all the
// entries of all layers together (plus a small cost per entry); past it
// NewSBOM fails with ErrTooLarge. The default is 128 MiB, about a million
// files with long paths.
func WithMaxMetadataBytes(n int64) Option { return func(o *options) { o.maxMetaBytes = n } }

// walkFactor sets the second budget of an image, for the work of walking
// its paths: the flattening looks up every parent directory of every entry,
// which costs about the name's length times its depth, so a few thousand
// long, deep names would keep the scanner busy for minutes. Real images
// (a million files, a few directories deep) stay far below it.
const walkFactor = 8

// metaBudget is the metadata budget of one image, shared by its layers.
type metaBudget struct {
	mu       sync.Mutex
	left     int64
	max      int64
	walkLeft int64
}

func newMetaBudget(max int64) *metaBudget {
	return &metaBudget{left: max, max: max, walkLeft: max * walkFactor}
}

// charge checks one tar entry of layer i against the limits.
func (b *metaBudget) charge(i int, hdr *tar.Header) error {
	if n := len(hdr.Name); n > maxPathBytes {
		return fmt.Errorf("%w: layer %d: an entry's name is %d bytes (%q); paths are at most %d", ErrTooLarge, i, n, short64(hdr.Name), maxPathBytes)
	}
	if n := len(hdr.Linkname); n > maxPathBytes {
		return fmt.Errorf("%w: layer %d: the link target of %q is %d bytes; link targets are at most %d", ErrTooLarge, i, short64(hdr.Name), n, maxPathBytes)
	}
	d := strings.Count(strings.Trim(hdr.Name, "/"), "/") + 1
	if d > maxPathDepth {
		return fmt.Errorf("%w: layer %d: %q is %d directories deep; at most %d", ErrTooLarge, i, short64(hdr.Name), d, maxPathDepth)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left -= int64(len(hdr.Name) + len(hdr.Linkname) + entryOverhead)
	if b.left < 0 {
		return fmt.Errorf("%w: layer %d: the names and link targets of the image's entries exceed %d bytes", ErrTooLarge, i, b.max)
	}
	b.walkLeft -= int64(len(hdr.Name)+entryOverhead) * int64(d)
	if b.walkLeft < 0 {
		return fmt.Errorf("%w: layer %d: the image's paths are too many, too long and too deep to flatten (their lengths times their depths exceed %d)", ErrTooLarge, i, b.max*walkFactor)
	}
	return nil
}

func short64(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// boundedImage is img with every layer's entries checked against one
// budget as they stream in.
type boundedImage struct {
	v1.Image
	b *metaBudget
}

func (im boundedImage) Layers() ([]v1.Layer, error) {
	ls, err := im.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = boundedLayer{Layer: l, i: i, b: im.b}
	}
	return out, nil
}

type boundedLayer struct {
	v1.Layer
	i int
	b *metaBudget
}

// Uncompressed passes the layer's bytes through unchanged while a tar
// reader of its own reads their headers; an entry over a limit ends the
// stream with the reason, so the reader downstream fails with it. At most
// the one offending entry has reached the reader downstream.
func (l boundedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer rc.Close()
		pw.CloseWithError(l.check(io.TeeReader(rc, pw)))
	}()
	return pr, nil
}

func (l boundedLayer) check(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Pass on what follows the end marker too: the reader
			// downstream reads to the end to verify the digest.
			_, err = io.Copy(io.Discard, r)
			return err
		}
		if err != nil {
			return err
		}
		if err := l.b.charge(l.i, hdr); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return err
		}
	}
}
