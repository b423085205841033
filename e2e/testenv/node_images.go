package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// imageRecipe names the way images are built here; change it when buildImage or a populate
// function changes, so cached tarballs are rebuilt.
const imageRecipe = "testenv-images-v1"

// nodeImage is one image the node imports: there is no registry, so Pods use
// `imagePullPolicy: Never` with these names.
type nodeImage struct {
	name     string // base name for `ctr images import --base-name`; the tag is v1
	populate func(rootfs string) error
	config   []string // `umoci config` flags
}

func (n *node) nodeImages() []nodeImage {
	return []nodeImage{
		{"localhost/pause", n.populatePause, []string{"--config.entrypoint", "/pause"}},
		{"localhost/busybox", populateBusybox, []string{"--config.cmd", "/bin/sh",
			"--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}},
	}
}

// importImages builds the image tarballs offline with umoci (cached by content, so a repeated
// `up` only imports) and imports them into containerd's k8s.io namespace.
func (n *node) importImages() error {
	dir, err := n.imageTarballs()
	if err != nil {
		return err
	}
	for _, img := range n.nodeImages() {
		// Without --base-name an OCI archive's image is named import-<date>:v1.
		if _, err := run("ctr", "--address", n.cfg.containerdSocket(), "--namespace", "k8s.io",
			"images", "import", "--base-name", img.name, filepath.Join(dir, tarballName(img.name))); err != nil {
			return err
		}
	}
	return nil
}

func tarballName(image string) string { return filepath.Base(image) + ".tar" }

// imageTarballs returns the cache directory holding every image's OCI archive, building them
// if needed. The key covers the recipe and the two binaries the images are made of.
func (n *node) imageTarballs() (string, error) {
	busybox, _ := exec.LookPath("busybox")
	key, err := hashOf(imageRecipe, filepath.Join(n.exeDir, "pause"), busybox)
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	root := filepath.Join(cache, "spiderpool-rs", "images")
	dir := filepath.Join(root, key)
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir, nil
	}
	start := time.Now()
	work := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	if err := os.RemoveAll(work); err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	for _, img := range n.nodeImages() {
		if err := buildImage(work, img); err != nil {
			return "", fmt.Errorf("build %s: %w", img.name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "done"), nil, 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir) // an incomplete earlier attempt
	if err := os.Rename(work, dir); err != nil {
		return "", err
	}
	pruneDirs(root, 3)
	n.logf("node: images built in %s (cached in %s)", time.Since(start).Round(time.Millisecond), dir)
	return dir, nil
}

// buildImage makes an OCI layout with one layer (umoci: new, unpack, fill the rootfs, repack,
// set the config, drop unreferenced blobs) and archives it as WORK/<name>.tar, tag v1.
func buildImage(work string, img nodeImage) error {
	short := filepath.Base(img.name)
	layout := filepath.Join(work, "layout-"+short)
	bundle := filepath.Join(work, "bundle-"+short)
	ref := layout + ":v1"
	steps := [][]string{
		{"umoci", "init", "--layout", layout},
		{"umoci", "new", "--image", ref},
		{"umoci", "unpack", "--image", ref, bundle},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	if err := img.populate(filepath.Join(bundle, "rootfs")); err != nil {
		return err
	}
	steps = [][]string{
		{"umoci", "repack", "--image", ref, bundle},
		append([]string{"umoci", "config", "--image", ref}, img.config...),
		{"umoci", "gc", "--layout", layout},
		{"tar", "-C", layout, "-cf", filepath.Join(work, tarballName(img.name)), "oci-layout", "index.json", "blobs"},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// populatePause: the image holds only the static pause binary built next to testenv.
func (n *node) populatePause(rootfs string) error {
	return copyFile(filepath.Join(n.exeDir, "pause"), filepath.Join(rootfs, "pause"), 0o755)
}

// populateBusybox: Debian's static busybox with a symlink per applet (what `busybox --install
// -s` does, without running it in a chroot), and a passwd/group so `id`, `ps` and kubelet's
// runAsUser checks resolve root and nobody.
func populateBusybox(rootfs string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "var", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		return err
	}
	busybox, _ := exec.LookPath("busybox")
	if err := copyFile(busybox, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	applets, err := run(busybox, "--list-full")
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(applets) {
		if a == "bin/busybox" {
			continue
		}
		if err := os.Symlink("/bin/busybox", filepath.Join(rootfs, a)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnobody:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hashOf hashes a label and the contents of files (16 hex digits).
func hashOf(label string, files ...string) (string, error) {
	h := sha256.New()
	io.WriteString(h, label)
	for _, f := range files {
		in, err := os.Open(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\n== %s\n", filepath.Base(f))
		_, err = io.Copy(h, in)
		in.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// pruneDirs keeps the keep most recently modified subdirectories of root.
func pruneDirs(root string, keep int) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	type dirAge struct {
		path string
		mod  time.Time
	}
	var dirs []dirAge
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.IsDir() && !strings.Contains(e.Name(), ".tmp-") {
			dirs = append(dirs, dirAge{filepath.Join(root, e.Name()), info.ModTime()})
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].mod.After(dirs[j].mod) })
	for i := keep; i < len(dirs); i++ {
		os.RemoveAll(dirs[i].path)
	}
}
