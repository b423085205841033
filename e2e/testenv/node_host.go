package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The host state a node changes outside DIR/node. recordHost saves it before the first change
// (DIR/node/host-before.json); restoreHost puts it back, in `up`'s teardown or in `node-down`.

// hostSysctls are the sysctls a node may change: kubelet's kernel tunables (it sets them
// unless protectKernelDefaults, and then refuses to start when they differ), and IP forwarding
// (the bridge plugin's isGateway turns it on).
var hostSysctls = []string{
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.forwarding",
	"net.ipv4.conf.all.accept_redirects", // the kernel sets it to !ip_forward
	"net.ipv4.conf.default.forwarding",
	"net.ipv6.conf.all.forwarding",
	"net.ipv6.conf.default.forwarding",
}

// hostDirs are fixed paths outside DIR/node that containerd 1.6, runc, kubelet or libcni create
// whatever they are configured with; each is removed at teardown if it did not exist before.
var hostDirs = []string{
	"/run/containerd",     // containerd: shim sockets (/run/containerd/s), runc state (runc/k8s.io)
	"/var/lib/cni",        // libcni's result cache
	"/var/lib/kubelet",    // kubelet: device-plugins socket directory, whatever --root-dir says
	"/var/log/containers", // kubelet: per-container log symlinks
	// Not created with our configuration, but the defaults of settings we override:
	"/var/log/pods",           // kubelet podLogsDir
	"/usr/libexec/kubernetes", // kubelet volumePluginDir
	"/opt/containerd",         // containerd opt plugin
	"/var/lib/containerd",     // containerd root
	"/etc/cni",                // CNI conf_dir
	"/opt/cni",                // CNI bin_dir
}

// netnsDir holds the CRI network namespaces (cni-*, bind mounts of nsfs); containerd makes the
// directory itself a shared bind mount. Other software (tests) may keep namespaces there too,
// so only cni-* entries are ours.
const netnsDir = "/run/netns"

type hostState struct {
	Sysctls   map[string]string   `json:"sysctls"`
	Dirs      map[string]bool     `json:"dirs"`      // path -> existed
	Mounts    []string            `json:"mounts"`    // mount points under DIR/node and hostDirs
	Netns     []string            `json:"netns"`     // entries of /run/netns
	Chains    map[string][]string `json:"chains"`    // "iptables filter" -> chain names
	NftTables []string            `json:"nftTables"` // `nft list tables` lines
}

func recordHost(cfg *nodeConfig) (*hostState, error) {
	h := &hostState{Sysctls: map[string]string{}, Dirs: map[string]bool{}, Chains: map[string][]string{}}
	for _, k := range hostSysctls {
		if v, err := readSysctl(k); err == nil {
			h.Sysctls[k] = v
		}
	}
	for _, d := range append([]string{netnsDir}, hostDirs...) {
		_, err := os.Lstat(d)
		h.Dirs[d] = err == nil
	}
	h.Mounts = mountsUnder(append(watchedPrefixes(cfg), netnsDir))
	h.Netns = listDir(netnsDir)
	for _, bin := range iptablesBins {
		for _, table := range iptablesTables {
			rules, err := iptablesRules(bin, table)
			if err != nil {
				return nil, err
			}
			h.Chains[bin+" "+table] = chainsOf(rules)
		}
	}
	tables, err := nftTables()
	if err != nil {
		return nil, err
	}
	h.NftTables = tables
	return h, nil
}

// restoreHost undoes every change the node made outside DIR/node, and unmounts what is mounted
// inside it. Each step runs even when an earlier one failed; all errors are returned.
func restoreHost(cfg *nodeConfig, logf func(string, ...any)) error {
	var before hostState
	if err := readJSON(cfg.path("host-before.json"), &before); err != nil {
		return fmt.Errorf("read the recorded host state: %w", err)
	}
	var errs []error
	for _, step := range []struct {
		what string
		fn   func() error
	}{
		{"kill the node's processes", func() error { return killNodeProcesses(cfg) }},
		{"unmount", func() error { return unmountNew(watchedPrefixes(cfg), before.Mounts) }},
		{"network namespaces", func() error { return removeCNINetns(&before) }},
		{"links", func() error { return deleteNodeLinks(cfg) }},
		{"iptables", func() error { return removeNewChains(before.Chains) }},
		{"nftables", func() error { return removeNewNftTables(before.NftTables) }},
		{"sysctls", func() error { return restoreSysctls(before.Sysctls, logf) }},
		{"cgroups", removeKubepodsCgroups},
		{"directories", func() error { return removeNewDirs(before.Dirs) }},
	} {
		if err := step.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step.what, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(cfg.activeMarker())
}

func watchedPrefixes(cfg *nodeConfig) []string { return append([]string{cfg.Dir}, hostDirs...) }

// ---- processes

// killNodeProcesses kills what is left of the node: containerd, shims, kubelet, scheduler and
// controller-manager (found by their command line naming DIR) and every process in the kubepods
// cgroups (the Pods' containers). Normally nothing is left; after a SIGKILLed `up` the shims
// and Pods are.
func killNodeProcesses(cfg *nodeConfig) error {
	self, _ := os.Executable()
	ours := func(argv []string) bool {
		exe := filepath.Base(argv[0])
		isComponent := exe == "containerd" || strings.HasPrefix(exe, "containerd-shim") ||
			(exe == filepath.Base(self) && len(argv) > 1 && slices.Contains([]string{"kubelet", "kube-scheduler", "kcm"}, argv[1]))
		return isComponent && strings.Contains(strings.Join(argv, " "), cfg.StateDir+"/")
	}
	for _, pid := range findProcesses(ours) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := kubepodsPIDs()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive in the kubepods cgroups", pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findProcesses returns the PIDs (not ours) whose argv satisfies match.
func findProcesses(match func(argv []string) bool) []int {
	var pids []int
	for _, e := range listDir("/proc") {
		pid, err := strconv.Atoi(e)
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e, "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"); match(argv) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ---- cgroups

// cgroupRoots returns the mount points of every cgroup hierarchy (v1 controllers, named
// hierarchies such as name=systemd, and a v2 "unified" one in hybrid mode).
func cgroupRoots() []string {
	var roots []string
	for _, m := range readMountinfo() {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			roots = append(roots, m.point)
		}
	}
	return roots
}

// kubepodsDirs returns kubelet's cgroup directories in every hierarchy, deepest first.
func kubepodsDirs() []string {
	var dirs []string
	for _, root := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(root, "kubepods"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

func kubepodsPIDs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range kubepodsDirs() {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// removeKubepodsCgroups removes kubelet's cgroup trees (rmdir, deepest first); a cgroup can be
// removed once its last process is gone, which may take a moment after the kill.
func removeKubepodsCgroups() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var failed error
		for _, d := range kubepodsDirs() {
			if err := unix.Rmdir(d); err != nil && !os.IsNotExist(err) {
				failed = fmt.Errorf("rmdir %s: %w", d, err)
			}
		}
		if failed == nil || time.Now().After(deadline) {
			return failed
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---- mounts

type mountEntry struct{ point, fstype string }

// readMountinfo lists this mount namespace's mounts in mount order.
func readMountinfo() []mountEntry {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []mountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, mountEntry{point: unescapeMount(fields[4]), fstype: fields[sep+1]})
	}
	return mounts
}

// unescapeMount decodes the octal escapes (\040 for a space, ...) of /proc/*/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, strings.TrimSuffix(prefix, "/")+"/")
}

// mountsUnder returns the mount points at or below any of prefixes, in mount order.
func mountsUnder(prefixes []string) []string {
	var out []string
	for _, m := range readMountinfo() {
		for _, p := range prefixes {
			if under(m.point, p) {
				out = append(out, m.point)
				break
			}
		}
	}
	return out
}

// unmountNew unmounts every mount below prefixes that is not in keep, newest first (a mount
// point can be stacked: kubelet bind-mounts its root dir onto itself to make it rshared).
func unmountNew(prefixes, keep []string) error {
	for pass := 0; pass < 10; pass++ {
		var todo []string
		for _, m := range mountsUnder(prefixes) {
			if !slices.Contains(keep, m) {
				todo = append(todo, m)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		for i := len(todo) - 1; i >= 0; i-- {
			if err := unix.Unmount(todo[i], 0); err != nil && pass > 2 {
				_ = unix.Unmount(todo[i], unix.MNT_DETACH) // busy: detach it, it goes when unused
			}
		}
	}
	return fmt.Errorf("still mounted: %v", mountsUnder(prefixes))
}

// ---- files

func listDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// removeCNINetns unmounts and removes the cni-* network namespaces that did not exist before,
// then undoes containerd's bind mount of /run/netns and the directory itself if they are new
// and nothing else lives there.
func removeCNINetns(before *hostState) error {
	var errs []error
	for _, name := range listDir(netnsDir) {
		if !strings.HasPrefix(name, "cni-") || slices.Contains(before.Netns, name) {
			continue
		}
		p := filepath.Join(netnsDir, name)
		if err := unmountNew([]string{p}, nil); err != nil {
			errs = append(errs, err)
		} else if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(listDir(netnsDir)) > 0 || len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := unmountNew([]string{netnsDir}, before.Mounts); err != nil {
		return err
	}
	if !before.Dirs[netnsDir] {
		if err := os.Remove(netnsDir); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// removeNewDirs removes the hostDirs that did not exist before, unless something is still
// mounted below one (never delete into a mount).
func removeNewDirs(existed map[string]bool) error {
	var errs []error
	for _, d := range hostDirs {
		if existed[d] {
			continue
		}
		if m := mountsUnder([]string{d}); len(m) > 0 {
			errs = append(errs, fmt.Errorf("%s not removed: %s is mounted", d, m[0]))
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ---- links

// deleteNodeLinks deletes the underlay veth pairs (deleting one end deletes both) and the
// cluster bridge. The Pods' veths die with their network namespaces; any still attached to the
// bridge after a short wait are deleted too.
func deleteNodeLinks(cfg *nodeConfig) error {
	var errs []error
	for _, name := range cfg.Underlay {
		if linkExists(name) {
			if _, err := run("ip", "link", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if linkExists(cfg.Bridge) {
		deadline := time.Now().Add(5 * time.Second)
		for len(bridgePorts(cfg.Bridge)) > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		for _, port := range bridgePorts(cfg.Bridge) {
			_, _ = run("ip", "link", "del", port)
		}
		if _, err := run("ip", "link", "del", cfg.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

func bridgePorts(bridge string) []string {
	return listDir(filepath.Join("/sys/class/net", bridge, "brif"))
}

// ---- sysctls

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func restoreSysctls(before map[string]string, logf func(string, ...any)) error {
	var errs []error
	keys := make([]string, 0, len(before))
	for k := range before {
		keys = append(keys, k)
	}
	// net.ipv4.ip_forward resets every conf.*.forwarding: restore it first.
	sort.Slice(keys, func(i, j int) bool {
		return keys[i] == "net.ipv4.ip_forward" || (keys[j] != "net.ipv4.ip_forward" && keys[i] < keys[j])
	})
	for _, k := range keys {
		if now, err := readSysctl(k); err == nil && now != before[k] {
			if err := os.WriteFile(sysctlPath(k), []byte(before[k]), 0o644); err != nil {
				errs = append(errs, err)
				continue
			}
			logf("restored sysctl %s = %s (was %s)", k, before[k], now)
		}
	}
	return errors.Join(errs...)
}
