// Command fsbench measures what the file system under a directory charges
// for creating files right after many were deleted, against creating them
// on a quiet file system, in the same run:
//
//   - A: the files of N rebased images in distribution's layout (per image
//     a blob directory and data file for the manifest and the config, and
//     a directory and link file for two layer links and a revision link)
//     are created under a fresh directory, then removed;
//   - B: the same again at once, right after A's removal.
//
// On ext4 without a journal (this VM's root file system) the inode
// allocator skips inodes freed in the last minute (five more while their
// inode table block is dirty), reading each candidate's block to check:
// creating a file costs several times more for minutes after a large
// delete (perf: recently_deleted, find_inode_bit). Every benchmark here
// that runs after another's cleanup, or after its own setup deleted
// upload files, pays for it; this shows how much, and whether the file
// system has a journal.
//
//	go run ./bench/fsbench [-dir /var/tmp] [-n 3000]
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the file system to measure")
	n := flag.Int("n", 3000, "images whose files each pass creates")
	workers := flag.Int("w", 2, "creating goroutines")
	flag.Parse()
	log.SetFlags(0)
	fmt.Printf("# fsbench: %s on %s; %d goroutines, %d images (10 inodes each) per pass, %s\n\n",
		*dir, fsOf(*dir), *workers, *n, time.Now().UTC().Format(time.RFC3339))
	quiet := pass(*dir, *n, *workers)
	after := pass(*dir, *n, *workers)
	fmt.Println("| pass | CPU per image (ms) | wall per image (ms) |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| A: first | %.3f | %.3f |\n", ms(quiet.cpu, *n), ms(quiet.wall, *n))
	fmt.Printf("| B: right after A's %d files were removed | %.3f | %.3f |\n", *n*10, ms(after.cpu, *n), ms(after.wall, *n))
	fmt.Printf("\nB / A, CPU per image: %.2f (A itself pays for whatever was deleted on this file system in the minutes before)\n", float64(after.cpu)/float64(quiet.cpu))
}

type cost struct{ cpu, wall time.Duration }

func ms(d time.Duration, n int) float64 { return d.Seconds() * 1000 / float64(n) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pass creates n images' files under a new directory in dir, syncs, and
// removes the directory; it returns the cost of the creating.
func pass(dir string, n, workers int) cost {
	root, err := os.MkdirTemp(dir, "fsbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	for i := range 256 {
		must(os.MkdirAll(filepath.Join(root, "blobs", fmt.Sprintf("%02x", i)), 0o777))
	}
	const repos = 50
	for r := range repos {
		must(os.MkdirAll(filepath.Join(root, "repositories", fmt.Sprint(r), "_layers"), 0o777))
		must(os.MkdirAll(filepath.Join(root, "repositories", fmt.Sprint(r), "_revisions"), 0o777))
	}
	body := make([]byte, 700)
	put := func(p string, b []byte) {
		must(os.Mkdir(filepath.Dir(p), 0o777))
		must(os.WriteFile(p, b, 0o666))
	}
	digest := func(i, k int) string {
		s := sha256.Sum256(fmt.Append(nil, i, "/", k))
		return hex.EncodeToString(s[:])
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	c0, t0 := cpuTime(), time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				repo := filepath.Join(root, "repositories", fmt.Sprint(i%repos))
				for k := range 2 { // manifest and config
					d := digest(i, k)
					put(filepath.Join(root, "blobs", d[:2], d, "data"), body)
				}
				for k := range 2 { // layer links
					d := digest(i, k+2)
					put(filepath.Join(repo, "_layers", d, "link"), []byte("sha256:"+d))
				}
				d := digest(i, 4)
				put(filepath.Join(repo, "_revisions", d, "link"), []byte("sha256:"+d))
			}
		})
	}
	wg.Wait()
	c := cost{cpu: cpuTime() - c0, wall: time.Since(t0)}
	f, err := os.Open(root)
	must(err)
	must(unix.Syncfs(int(f.Fd())))
	f.Close()
	return c
}

// fsOf names the file system dir is on, and for ext4 whether it has a
// journal (a jbd2 entry for its device).
func fsOf(dir string) string {
	abs, err := filepath.Abs(dir)
	must(err)
	mounts, err := mountinfo.GetMounts(mountinfo.ParentsFilter(abs))
	if err != nil || len(mounts) == 0 {
		return "an unknown file system"
	}
	m := mounts[0] // the deepest mount point above dir
	for _, o := range mounts[1:] {
		if len(o.Mountpoint) >= len(m.Mountpoint) {
			m = o
		}
	}
	if m.FSType != "ext4" {
		return fmt.Sprintf("%s (%s)", m.FSType, m.Mountpoint)
	}
	dev := filepath.Base(m.Source)
	if _, err := os.Stat("/proc/fs/jbd2/" + dev + "-8"); err == nil {
		return fmt.Sprintf("ext4 with a journal (%s, %s)", dev, m.Mountpoint)
	}
	return fmt.Sprintf("ext4 WITHOUT a journal (%s, %s): creating files costs more for minutes after a large delete", dev, m.Mountpoint)
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
