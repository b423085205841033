package main

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The node's fixed names. Everything global gets a `te`/`tu` prefix so it cannot collide with
// what other software on the machine uses.
const (
	clusterNetwork = "testenv-bridge" // the Multus clusterNetwork: the conflist's "name"
	clusterBridge  = "tecni0"
	clusterSubnet  = "10.244.0.0/24"
	clusterGateway = "10.244.0.1"
	pauseImage     = "localhost/pause:v1"
	busyboxImage   = "localhost/busybox:v1"
)

// nodeConfig describes the node. It is saved as DIR/node/node.json so that `testenv node-down`
// (another process, after `up` was SIGKILLed) undoes exactly what `up` did.
type nodeConfig struct {
	StateDir string   `json:"stateDir"` // DIR: admin kubeconfig, logs
	Dir      string   `json:"dir"`      // DIR/node: all of the node's state
	Name     string   `json:"name"`
	IP       string   `json:"ip"`
	Underlay []string `json:"underlay"` // host ends of the underlay veth pairs; peers are NAME-peer
	Bridge   string   `json:"bridge"`
	UpPID    int      `json:"upPID"` // the `testenv up` process that owns the node
}

func (c *nodeConfig) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}
func (c *nodeConfig) containerdSocket() string { return c.path("containerd", "containerd.sock") }
func (c *nodeConfig) containerdConfig() string { return c.path("containerd", "config.toml") }
func (c *nodeConfig) cniBinDir() string        { return c.path("cni", "bin") }
func (c *nodeConfig) cniConfDir() string       { return c.path("cni", "net.d") }
func (c *nodeConfig) kubeconfig() string       { return filepath.Join(c.StateDir, "kubeconfig") }
func (c *nodeConfig) logPath(name string) string {
	return filepath.Join(c.StateDir, name+".log")
}

// activeMarker exists from the first change to the host until teardown has undone them all:
// `up` refuses to start over it, `node-down` does nothing without it.
func (c *nodeConfig) activeMarker() string { return c.path("ACTIVE") }

// node is the running node of one `testenv up --with-node`.
type node struct {
	cfg    nodeConfig
	exeDir string // where pause and multus are (next to the testenv binary)
	logf   func(string, ...any)

	prepared chan struct{} // closed when prepare (background) has finished; prepErr is then valid
	prepErr  error

	containerd, scheduler, kubelet *child
}

// newNode checks everything the node needs before anything is started or changed, so that a
// missing package or a leftover from an earlier run fails with a clear message and no cleanup.
func newNode(o *upOptions) (*node, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("--with-node needs root (containerd, kubelet, network namespaces, iptables)")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	n := &node{exeDir: filepath.Dir(self), logf: func(string, ...any) {}}
	n.cfg = nodeConfig{StateDir: o.dir, Dir: filepath.Join(o.dir, "node"), Underlay: o.underlay,
		Bridge: clusterBridge, UpPID: os.Getpid()}
	for _, check := range []func() error{
		checkTools,
		n.checkBuiltBinaries,
		n.checkNames,
		n.checkNoOtherNode,
		n.checkSocketPath,
		n.detectNameAndIP,
	} {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// requiredTools maps each program the node runs to the Debian package that provides it.
var requiredTools = []struct{ path, pkg string }{
	{"containerd", "containerd"},
	{"containerd-shim-runc-v2", "containerd"},
	{"ctr", "containerd"},
	{"runc", "runc"},
	{"umoci", "umoci"},
	{"busybox", "busybox-static"},
	{"ip", "iproute2"},
	{"iptables", "iptables"},
	{"ip6tables", "iptables"},
	{"iptables-restore", "iptables"},
	{"ip6tables-restore", "iptables"},
	{"nft", "nftables"},
	{"tar", "tar"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/macvlan", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
}

func checkTools() error {
	var missing []string
	for _, t := range requiredTools {
		if _, err := exec.LookPath(t.path); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", t.path, t.pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--with-node: missing %s; apt-get install -y containerd runc umoci busybox-static "+
			"containernetworking-plugins iproute2 iptables nftables", strings.Join(missing, ", "))
	}
	// The busybox image needs a static busybox; Debian's `busybox` package is dynamically linked.
	bb, _ := exec.LookPath("busybox")
	if f, err := elf.Open(bb); err == nil {
		defer f.Close()
		if f.Section(".interp") != nil {
			return fmt.Errorf("--with-node: %s is dynamically linked; install the Debian package busybox-static", bb)
		}
	}
	return nil
}

func (n *node) checkBuiltBinaries() error {
	for _, b := range []string{"pause", "multus"} {
		if _, err := os.Stat(filepath.Join(n.exeDir, b)); err != nil {
			return fmt.Errorf("--with-node: %s not found next to the testenv binary (build with e2e/testenv/build.sh)", b)
		}
	}
	return nil
}

var linkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// checkNames: the underlay veth pairs and the bridge are created by us and deleted at teardown,
// so none of their names may exist yet (a leftover would be deleted, or a real NIC hijacked).
func (n *node) checkNames() error {
	if len(n.cfg.Underlay) == 0 {
		return errors.New("--underlay-nics: at least one name is needed")
	}
	names := []string{n.cfg.Bridge}
	for _, u := range n.cfg.Underlay {
		if !linkName.MatchString(u) || len(u+"-peer") > 15 {
			return fmt.Errorf("--underlay-nics: %q is not a valid link name of at most 10 characters (its peer is %s-peer, max 15)", u, u)
		}
		names = append(names, u, u+"-peer")
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			return fmt.Errorf("--underlay-nics: %q given twice", name)
		}
		seen[name] = true
		if _, err := net.InterfaceByName(name); err == nil {
			return fmt.Errorf("--with-node: network interface %q already exists (another node running, or a leftover: `testenv node-down --dir OLDDIR`, or pick other --underlay-nics)", name)
		}
	}
	return nil
}

// checkNoOtherNode: a kubelet's cgroups and fixed paths (/var/lib/kubelet, /run/netns) are
// global, so only one node can run on a machine; a killed one must be cleaned up first.
func (n *node) checkNoOtherNode() error {
	if _, err := os.Stat(n.cfg.activeMarker()); err == nil {
		return fmt.Errorf("--with-node: the node of an earlier run in %s was not cleaned up: run `testenv node-down --dir %s` first", n.cfg.StateDir, n.cfg.StateDir)
	}
	for _, root := range cgroupRoots() {
		if _, err := os.Stat(filepath.Join(root, "kubepods")); err == nil {
			return fmt.Errorf("--with-node: %s/kubepods exists: another kubelet runs on this machine, or a killed node was not cleaned up (`testenv node-down --dir OLDDIR`)", root)
		}
	}
	if mounts := mountsUnder([]string{n.cfg.Dir}); len(mounts) > 0 {
		return fmt.Errorf("--with-node: %s is still mounted (a killed node?): run `testenv node-down --dir %s`", mounts[0], n.cfg.StateDir)
	}
	return nil
}

// checkSocketPath: a unix socket path is limited to 108 bytes, and containerd adds ".ttrpc".
func (n *node) checkSocketPath() error {
	if s := n.cfg.containerdSocket() + ".ttrpc"; len(s) > 100 {
		return fmt.Errorf("--with-node: --dir is too long for containerd's socket path %s (max 100 bytes)", s)
	}
	return nil
}

// detectNameAndIP: the node is named like the kubelet names it (the hostname; it must not be
// overridden, or the apiserver cannot resolve it to reach the kubelet for exec/logs), and its IP
// is the IPv4 address of the interface that holds the default route.
func (n *node) detectNameAndIP() error {
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	n.cfg.Name = strings.ToLower(host)
	ifname, err := defaultRouteInterface()
	if err != nil {
		return err
	}
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			n.cfg.IP = ipn.IP.String()
			return nil
		}
	}
	return fmt.Errorf("--with-node: interface %s (default route) has no IPv4 address", ifname)
}

// defaultRouteInterface reads /proc/net/route: the line with destination 0 and mask 0.
func defaultRouteInterface() (string, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0], nil
		}
	}
	return "", errors.New("--with-node: no IPv4 default route: cannot choose the node IP")
}

// prepareInBackground records the host's state (synchronously: nothing is changed before it is
// on disk), then prepares CNI, underlay NICs, containerd and the images in the background;
// start waits for it.
func (n *node) prepareInBackground() error {
	// checkNoOtherNode made sure nothing is mounted below DIR/node: it is safe to wipe.
	if err := os.RemoveAll(n.cfg.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(n.cfg.Dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(n.cfg.path("node.json"), n.cfg); err != nil {
		return err
	}
	before, err := recordHost(&n.cfg)
	if err != nil {
		return fmt.Errorf("record host state: %w", err)
	}
	if err := writeJSON(n.cfg.path("host-before.json"), before); err != nil {
		return err
	}
	if err := os.WriteFile(n.cfg.activeMarker(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	n.prepared = make(chan struct{})
	go func() {
		defer close(n.prepared)
		n.prepErr = n.prepare()
	}()
	return nil
}

func (n *node) prepare() error {
	start := time.Now()
	for _, step := range []struct {
		what string
		fn   func() error
	}{
		{"CNI configuration", n.writeCNI},
		{"underlay NICs", n.createUnderlay},
		{"containerd", n.startContainerd},
		{"images", n.importImages},
	} {
		if err := step.fn(); err != nil {
			return fmt.Errorf("node: %s: %w", step.what, err)
		}
	}
	n.logf("node: containerd, images, CNI and underlay NICs ready in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// start runs once the control plane is ready: it waits for prepare, starts kube-scheduler and
// kubelet, waits for the node to be Ready and lifts its not-ready taint. It returns the DIR/env
// lines for the node.
func (n *node) start(c *cluster) ([]string, error) {
	if err := c.waitFor(func() bool { return isClosed(n.prepared) }); err != nil {
		return nil, fmt.Errorf("node preparation: %w", err)
	}
	if n.prepErr != nil {
		return nil, n.prepErr
	}
	begin := time.Now()
	schedulerURL, err := n.startScheduler()
	if err != nil {
		return nil, err
	}
	if err := n.startKubelet(); err != nil {
		return nil, err
	}
	cs, err := clientsetFor(n.cfg.kubeconfig())
	if err != nil {
		return nil, err
	}
	watched := []*exited{n.containerd.exited, n.scheduler.exited, n.kubelet.exited}
	if err := c.waitFor(func() bool {
		return httpOK(insecureClient, schedulerURL, "") && nodeReady(cs, n.cfg.Name)
	}, watched...); err != nil {
		return nil, fmt.Errorf("node %s not ready: %v (see %s/kubelet.log, kube-scheduler.log, containerd.log)", n.cfg.Name, err, c.dir)
	}
	if err := untaintNotReady(cs, n.cfg.Name); err != nil {
		return nil, fmt.Errorf("node %s: remove the not-ready taint: %w", n.cfg.Name, err)
	}
	n.logf("node %s (%s) Ready in %s after kubelet start", n.cfg.Name, n.cfg.IP, time.Since(begin).Round(time.Millisecond))
	return []string{
		"NODE_NAME=" + n.cfg.Name,
		"NODE_IP=" + n.cfg.IP,
		"CNI_BIN_DIR=" + n.cfg.cniBinDir(),
		"CNI_CONF_DIR=" + n.cfg.cniConfDir(),
		"CLUSTER_NETWORK=" + clusterNetwork,
		"CONTAINERD_SOCKET=" + n.cfg.containerdSocket(),
		"UNDERLAY_NICS=" + strings.Join(n.cfg.Underlay, ","),
	}, nil
}

// teardown undoes the node while the control plane still runs: Pods are deleted through the
// apiserver while kubelet runs, so each sandbox gets its CNI DEL; then kubelet and scheduler
// stop, remaining sandboxes are removed through CRI, containerd stops, and the host is restored.
func (n *node) teardown(kubeconfig string) error {
	if n.prepared == nil {
		return nil // nothing was changed yet
	}
	<-n.prepared // never tear down under a running prepare
	begin := time.Now()
	if n.kubelet != nil && !isClosed(n.kubelet.done) {
		if cs, err := clientsetFor(kubeconfig); err == nil {
			if err := deleteNodePods(cs, n.cfg.Name, 45*time.Second, n.logf); err != nil {
				n.logf("node teardown: %v", err)
			}
		}
	}
	n.kubelet.stop(10*time.Second, n.logf)
	n.scheduler.stop(10*time.Second, n.logf)
	if n.containerd != nil && !isClosed(n.containerd.done) {
		if err := removeSandboxes(n.cfg.containerdSocket(), 60*time.Second, n.logf); err != nil {
			n.logf("node teardown: %v", err)
		}
	}
	n.containerd.stop(15*time.Second, n.logf)
	err := restoreHost(&n.cfg, n.logf)
	n.logf("node torn down in %s", time.Since(begin).Round(time.Millisecond))
	return err
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// run runs a host tool and returns its combined output; the error includes that output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
