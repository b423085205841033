package main

import (
	"io"
	"os"
	"path/filepath"
)

// systemCNIDir is where Debian's containernetworking-plugins installs the plugins.
const systemCNIDir = "/usr/lib/cni"

// writeCNI fills DIR/node/cni: bin/ (symlinks to the system plugins plus a copy of multus:
// containerd 1.6 takes a single bin_dir) and net.d/ (Multus thin plugin first, delegating to the
// bridge cluster network).
func (n *node) writeCNI() error {
	bin, conf := n.cfg.cniBinDir(), n.cfg.cniConfDir()
	for _, d := range []string{bin, conf, n.cfg.path("cni", "ipam"), n.cfg.path("cni", "multus")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	plugins, err := os.ReadDir(systemCNIDir)
	if err != nil {
		return err
	}
	for _, p := range plugins {
		if err := os.Symlink(filepath.Join(systemCNIDir, p.Name()), filepath.Join(bin, p.Name())); err != nil {
			return err
		}
	}
	// A copy, not a symlink: the binary in the build cache may be pruned by a later build.
	if err := copyFile(filepath.Join(n.exeDir, "multus"), filepath.Join(bin, "multus"), 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(conf, "10-"+clusterNetwork+".conflist"), n.clusterConflist()); err != nil {
		return err
	}
	// containerd (max_conf_num = 1) uses the first file by name: Multus.
	return writeJSON(filepath.Join(conf, "00-multus.conf"), n.multusConf())
}

// clusterConflist is the cluster network: one bridge, host-local IPAM under DIR/node (no global
// /var/lib/cni/networks state), no IP masquerade (no iptables rules to clean up).
func (n *node) clusterConflist() map[string]any {
	return map[string]any{
		"cniVersion": "1.0.0",
		"name":       clusterNetwork,
		"plugins": []any{map[string]any{
			"type":      "bridge",
			"bridge":    n.cfg.Bridge,
			"isGateway": true,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": n.cfg.path("cni", "ipam"),
				"ranges":  [][]map[string]string{{{"subnet": clusterSubnet, "gateway": clusterGateway}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	}
}

// multusConf is the Multus thin plugin's configuration. clusterNetwork is the network's NAME
// plus confDir: with a path to the .conflist, DEL failed ("plugin type="bridge" failed
// (delete): no IP ranges specified") and Pods hung in Terminating.
func (n *node) multusConf() map[string]any {
	return map[string]any{
		"cniVersion":     "1.0.0",
		"name":           "multus-cni-network",
		"type":           "multus",
		"kubeconfig":     n.cfg.kubeconfig(),
		"confDir":        n.cfg.cniConfDir(),
		"cniDir":         n.cfg.path("cni", "multus"),
		"binDir":         n.cfg.cniBinDir(),
		"logFile":        n.cfg.path("multus.log"),
		"logLevel":       "verbose",
		"clusterNetwork": clusterNetwork,
	}
}

// createUnderlay creates the node's underlay NICs: the kernel here has veth and macvlan but no
// dummy/vlan/bond/ipvlan, so each NIC is the host end NAME of a veth pair (NAME-peer), both up;
// tests use NAME as a macvlan master.
func (n *node) createUnderlay() error {
	for _, name := range n.cfg.Underlay {
		if _, err := run("ip", "link", "add", name, "type", "veth", "peer", "name", name+"-peer"); err != nil {
			return err
		}
		for _, l := range []string{name, name + "-peer"} {
			if _, err := run("ip", "link", "set", l, "up"); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
