package runtime

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"
)

// PauseMain is the sandbox's process: it holds the pod's namespaces open,
// reaps any child that ends up with it, and returns on SIGTERM or SIGINT.
// `slipway pause` calls it; the pause image runs the binary that Config
// names with Config.PauseArgs.
func PauseMain() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// The pause image is made on the node from an executable already there
// (slipway itself, in production), so a node needs no registry to start
// pods: nothing is pulled. A static executable goes in alone. A
// dynamically linked one goes in with its ELF interpreter at the path the
// binary names and its shared libraries (DT_NEEDED, transitively) in
// /lib, found where the host's loader would find them, and LD_LIBRARY_PATH
// points there. The tag carries a hash of the executable, so a new build
// of slipway makes a new pause image and an old one is reused as is.

// pauseImage returns the tag of the pause image, loading it into the
// engine if it is not there (the first time, or after an image prune).
func (d *Docker) pauseImage(ctx context.Context) (string, error) {
	d.pauseMu.Lock()
	defer d.pauseMu.Unlock()
	exe := d.cfg.PauseBinary
	if d.pauseRef == "" {
		sum, err := fileSHA256(exe)
		if err != nil {
			return "", fmt.Errorf("runtime: pause binary: %w", err)
		}
		d.pauseRef = "slipway-pause:" + sum[:16]
	}
	if _, err := d.cli.ImageInspect(ctx, d.pauseRef); err == nil {
		return d.pauseRef, nil
	}
	files, env, err := executableFiles(exe)
	if err != nil {
		return "", fmt.Errorf("runtime: pause binary %s: %w", exe, err)
	}
	cfg := v1.Config{Entrypoint: append([]string{"/pause"}, d.cfg.PauseArgs...), Env: env, StopSignal: "SIGTERM"}
	if err := loadImage(ctx, d.cli, d.pauseRef, files, cfg); err != nil {
		return "", fmt.Errorf("runtime: loading the pause image: %w", err)
	}
	return d.pauseRef, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// executableFiles maps the paths in the image to the host files that make
// exe runnable at /pause, and returns the environment it needs.
func executableFiles(exe string) (map[string]string, []string, error) {
	files := map[string]string{"/pause": exe}
	f, err := elf.Open(exe)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return files, nil, nil // static
	}
	files[interp] = interp
	real, err := filepath.EvalSymlinks(interp)
	if err != nil {
		return nil, nil, fmt.Errorf("ELF interpreter: %w", err)
	}
	dirs := []string{filepath.Dir(real), filepath.Dir(interp), "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	if err := addLibraries(f, dirs, files); err != nil {
		return nil, nil, err
	}
	return files, []string{"LD_LIBRARY_PATH=/lib"}, nil
}

func addLibraries(f *elf.File, dirs []string, files map[string]string) error {
	libs, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	for _, lib := range libs {
		target := "/lib/" + lib
		if _, done := files[target]; done {
			continue
		}
		found := ""
		for _, dir := range dirs {
			if p := filepath.Join(dir, lib); fileExists(p) {
				found = p
				break
			}
		}
		if found == "" {
			return fmt.Errorf("shared library %s not found in %s", lib, strings.Join(dirs, ", "))
		}
		files[target] = found
		lf, err := elf.Open(found)
		if err != nil {
			return err
		}
		err = addLibraries(lf, dirs, files)
		lf.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// loadImage loads an image of one layer, the host files mapped to their
// paths in the image (all executable), into the engine as ref.
func loadImage(ctx context.Context, cli *client.Client, ref string, files map[string]string, cfg v1.Config) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTar(pw, files)) }()
		return pr, nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	if img, err = mutate.Config(img, cfg); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.Write(tag, img, pw)) }()
	res, err := cli.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	defer res.Close()
	out, err := io.ReadAll(res)
	if err != nil {
		return err
	}
	if strings.Contains(string(out), `"error"`) {
		return fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	return nil
}

func writeTar(w io.Writer, files map[string]string) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		rel := strings.TrimPrefix(dst, "/")
		for dir := path.Dir(rel); dir != "." && !dirs[dir]; dir = path.Dir(dir) {
			dirs[dir] = true
			// A parent may follow its child: readers create missing
			// parents, and this entry sets the mode.
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if err := addFile(tw, rel, files[dst]); err != nil {
			return err
		}
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: st.Size(), Mode: 0o755}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
