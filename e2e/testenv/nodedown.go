package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runNodeDown is `testenv node-down --dir DIR`: the node teardown for when `testenv up
// --with-node` could not do it itself (SIGKILL, OOM kill, crash). Its children (kubelet,
// scheduler, controller-manager, containerd) died with it (Pdeathsig), but the containerd
// shims and the Pods' processes, network namespaces, mounts and cgroups survive, and so do the
// host changes. It is safe to run at any time: without an active node in DIR it does nothing.
func runNodeDown(argv []string) int {
	fs := flag.NewFlagSet("node-down", flag.ContinueOnError)
	dir := fs.String("dir", "", "the state directory given to `testenv up --with-node`")
	if err := fs.Parse(argv); err != nil || *dir == "" || fs.NArg() != 0 {
		usage()
		return 2
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "testenv node-down: "+format+"\n", a...) }
	abs, err := filepath.Abs(*dir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	var cfg nodeConfig
	if err := readJSON(filepath.Join(abs, "node", "node.json"), &cfg); err != nil {
		if os.IsNotExist(err) {
			return 0 // no node was ever started in DIR
		}
		logf("%v", err)
		return 1
	}
	if _, err := os.Stat(cfg.activeMarker()); err != nil {
		return 0 // already torn down
	}
	if os.Geteuid() != 0 {
		logf("needs root")
		return 1
	}
	if upStillRunning(cfg.UpPID) {
		logf("testenv up (pid %d) still runs: stop it with SIGTERM, it tears the node down itself", cfg.UpPID)
		return 1
	}
	begin := time.Now()
	removeSandboxesAfterCrash(&cfg, logf)
	if err := restoreHost(&cfg, logf); err != nil {
		logf("%v", err)
		return 1
	}
	logf("host restored in %s", time.Since(begin).Round(time.Millisecond))
	return 0
}

// removeSandboxesAfterCrash gives each surviving Pod sandbox its CNI DEL, the way a normal
// teardown does: a new containerd with the node's config and state finds the sandboxes (their
// shims still run), and CRI StopPodSandbox runs the CNI DEL. Multus cannot reach the apiserver
// now; it logs that and deletes from its cache. What fails here, restoreHost removes by force.
func removeSandboxesAfterCrash(cfg *nodeConfig, logf func(string, ...any)) {
	if _, err := os.Stat(cfg.containerdConfig()); err != nil {
		return // containerd was never configured
	}
	var cd *child
	if criReady(cfg.containerdSocket()) != nil {
		var err error
		if cd, err = startContainerd(cfg, cfg.logPath("containerd-node-down")); err != nil {
			logf("%v", err)
			return
		}
	}
	if err := removeSandboxes(cfg.containerdSocket(), 60*time.Second, logf); err != nil {
		logf("%v", err)
	}
	cd.stop(15*time.Second, logf)
}

// upStillRunning: is pid a live `testenv up` (a recycled pid is something else)?
func upStillRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv := strings.Split(string(b), "\x00")
	return len(argv) > 1 && argv[1] == "up"
}
