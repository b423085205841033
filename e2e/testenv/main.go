// Command testenv is spiderpool-rs' local Kubernetes test control plane: an embedded etcd and
// kube-apiserver in this process, plus (optionally) kube-controller-manager as a child process
// of this same binary. It is built from the k8s.io/kubernetes Go module, so no container runtime,
// kind cluster or downloaded release binary is needed.
//
//	testenv up --dir DIR [--with-controller-manager] [--with-node [--underlay-nics A,B]]
//	           [--port N] [--keep-data] [--timeout D]
//	testenv node-down --dir DIR  # restore the host after a node whose `up` was SIGKILLed
//	testenv kubectl ARGS...      # kubectl v1.36.3 built into the same binary
//	testenv kcm FLAGS...         # internal: the child processes of `up`
//	testenv kube-scheduler FLAGS...
//	testenv kubelet FLAGS...
//
// `up` prints exactly one line to stdout once the cluster is usable:
//
//	TESTENV READY kubeconfig=/abs/DIR/kubeconfig
//
// and runs until SIGTERM/SIGINT, then stops the controller-manager, the node (if any: Pods,
// kubelet, scheduler, containerd, host changes), the apiserver and etcd, in that order, and
// exits 0. Component logs go to DIR/*.log.
//
// With --with-node (root only) it also runs a real node on this machine: containerd (Debian's),
// kube-scheduler and kubelet (children of this binary), the Multus thin plugin delegating to a
// bridge cluster network, and veth pairs as underlay NICs; all state under DIR/node.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zones, as in the upstream component mains

	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream
)

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  testenv up --dir DIR [--with-controller-manager] [--with-node [--underlay-nics tu0,tu1]]
             [--port N] [--keep-data] [--timeout 3m]
  testenv node-down --dir DIR     # undo a node whose testenv was killed
  testenv kubectl [kubectl args...]
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch os.Args[1] {
	case "up":
		os.Exit(runUp(os.Args[2:]))
	case "kubectl":
		os.Exit(runKubectl(os.Args[2:]))
	case "kcm":
		os.Exit(runKCM(os.Args[2:]))
	case "kubelet":
		os.Exit(runKubelet(os.Args[2:]))
	case "kube-scheduler":
		os.Exit(runScheduler(os.Args[2:]))
	case "node-down":
		os.Exit(runNodeDown(os.Args[2:]))
	case "-h", "--help", "help":
		usage()
	default:
		usage()
		os.Exit(2)
	}
}
